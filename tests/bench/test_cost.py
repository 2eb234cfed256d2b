#!/usr/bin/python3
"""`batchdet bench --count` (gpu/bd_cost.c) against counts made without our code:

- DAMO-YOLO T 640 and Ns 416 (depthwise convs), deploy form, seeded: forward hooks on every
  nn.Conv2d of the PyTorch reference (tests/reference/damoyolo.py) on a 1x3xSxS input give
  the conv MACs (output elements x C/group x kh x kw), the number of convs and of grouped
  ones, the conv output elements (-> minimum activation bytes, 16-bit write + read), and
  the weights (every exported conv has a bias); the head's one MatMul (the DFL integral)
  is A x 4 x (R+1) MACs. The tool must agree within 1% (it should be exact).
- YOLOX-nano 416 (shared/data/models) and DAMO-YOLO T 640: the published 1.08 and 18.1
  GFLOPs are YOLOX's get_model_info (DAMO-YOLO's table follows it), i.e. 2 x thop's MACs
  on the unfused model, where thop also counts 2 ops per BatchNorm output element; so
  2 x (conv MACs + 2 x conv output elements) must come within 1% of them (conv MACs
  alone: 1.045 and 18.01 GFLOPs).
- the floor arithmetic: bytes of a batch and the H100/H200 floor times recomputed here.
Exit 77 when torch is missing. Env: BATCHDET (the binary), BD_TEST_DATA.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'reference'))
FAILS = []
# DAMO-YOLO's model zoo table (same thop x 2 convention as YOLOX, BN counted)
PUBLISHED = {('T', 640): 18.1e9}


def check(cond, msg):
    print('%s %s' % ('ok  ' if cond else 'FAIL', msg))
    if not cond:
        FAILS.append(msg)


def close(a, b, tol=0.01):
    return abs(a - b) <= tol * max(abs(b), 1e-30)


def count(bd, model, batch):
    p = subprocess.run([bd, 'bench', '--model', model, '--count', '--batch', str(batch),
                        '--json'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if p.returncode != 0:
        raise RuntimeError('batchdet bench --count: %s' % p.stderr.decode()[-300:])
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def torch_counts(torch, model, size):
    nn = torch.nn
    r = dict(macs=0, grouped_macs=0, n=0, n_grouped=0, out_elems=0, weights=0)

    def hook(m, inp, out):
        k = m.weight.shape
        macs = out.numel() * k[1] * k[2] * k[3]
        r['macs'] += macs
        r['n'] += 1
        r['out_elems'] += out.numel()
        r['weights'] += m.weight.numel() + k[0]   # exported convs all carry a bias
        if m.groups > 1:
            r['n_grouped'] += 1
            r['grouped_macs'] += macs
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 3, size, size) * 255)
    for h in hs:
        h.remove()
    return r


def damo_case(torch, dy, bd, name, size, tmp):
    model = dy.build(name, 0, 'deploy')
    path = os.path.join(tmp, '%s.onnx' % name)
    dy.export_onnx(model, torch.zeros(1, 3, size, size), path, 'deploy')
    ref = torch_counts(torch, model, size)
    c = count(bd, path, 1)
    a = dy.num_anchors(size)
    reg_max = dy.MODELS[name][6]
    tag = 'DAMO-%s %d' % (name, size)
    check(close(c['conv_macs'], ref['macs']), '%s conv MACs %.6g vs PyTorch hooks %.6g'
          % (tag, c['conv_macs'], ref['macs']))
    check(c['n_conv'] == ref['n'] and c['n_conv_grouped'] == ref['n_grouped'],
          '%s convs %d (%d grouped) vs %d (%d)' % (tag, c['n_conv'], c['n_conv_grouped'],
                                                  ref['n'], ref['n_grouped']))
    check(close(c['conv_grouped_macs'], ref['grouped_macs']) if ref['grouped_macs'] else
          c['conv_grouped_macs'] == 0, '%s grouped MACs %.6g vs %.6g'
          % (tag, c['conv_grouped_macs'], ref['grouped_macs']))
    # the integral's MatMul, or its dots fused into the softmaxes (bd_compile's fuse_dfl)
    check(c['n_matmul'] in (0, 1) and close(c['matmul_macs'], a * 4 * (reg_max + 1)),
          '%s matmul MACs %.6g vs A*4*(R+1) = %d' % (tag, c['matmul_macs'], a * 4 * (reg_max + 1)))
    # conv weights and biases, plus the integral's R+1 bin values (the MatMul constant)
    wref = ref['weights'] + reg_max + 1
    check(c['weight_values'] == wref, '%s weights %d vs conv weights + biases + R+1 = %d'
          % (tag, c['weight_values'], wref))
    check(close(c['act_min_bytes'], 4 * ref['out_elems']),
          '%s min activation bytes %.6g vs 4 x conv outputs %.6g'
          % (tag, c['act_min_bytes'], 4 * ref['out_elems']))
    if (name, size) in PUBLISHED:
        thop = 2 * (c['conv_macs'] + 2 * c['act_min_bytes'] / 4)
        check(close(thop, PUBLISHED[(name, size)]), '%s: 2 x (conv MACs + 2 x BN outputs) = '
              '%.4g vs published %.3g GFLOPs' % (tag, thop / 1e9, PUBLISHED[(name, size)] / 1e9))
    check(c['in_bytes'] == 3 * size * size and c['out_bytes'] == 4 * a * 84,
          '%s input %d B (u8) and outputs %d B (fp32)' % (tag, c['in_bytes'], c['out_bytes']))
    return path


def floor_case(bd, path):
    b = 32
    c1, cb = count(bd, path, 1), count(bd, path, b)
    want = (c1['weight_bytes'] + c1['other_const_bytes'] +
            b * (c1['in_bytes'] + c1['act_min_bytes'] + c1['out_bytes']))
    check(close(cb['min_bytes_batch'], want, 1e-9), 'batch %d bytes %.6g = weights + %d x per '
          'image %.6g' % (b, cb['min_bytes_batch'], b, want))
    for f in cb['floor']:
        mem = want / (f['tb_s'] * 1e12) * 1e3
        math = 2 * b * (c1['conv_macs'] + c1['matmul_macs']) / (f['tflops'] * 1e12) * 1e3
        check(close(f['floor_ms'], max(mem, math), 1e-3) and close(f['mem_ms'], mem, 1e-3),
              'floor %s: %.4f ms (bytes %.4f, math %.4f)' % (f['hw'], f['floor_ms'], mem, math))


def main():
    bd = os.environ.get('BATCHDET')
    if not bd or not os.path.exists(bd):
        print('BATCHDET not set to the batchdet binary')
        return 1
    try:
        import torch
    except ImportError:
        print('no torch: skipped')
        return 77
    import damoyolo as dy
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix='bd_cost_') as tmp:
        t = damo_case(torch, dy, bd, 'T', 640, tmp)
        damo_case(torch, dy, bd, 'Ns', 416, tmp)
        floor_case(bd, t)
    nano = os.path.join(os.environ.get('BD_TEST_DATA', ''), 'models', 'yolox_nano.onnx')
    if os.path.exists(nano):
        c = count(bd, nano, 1)
        thop = 2 * (c['conv_macs'] + 2 * c['act_min_bytes'] / 4)
        check(close(thop, 1.08e9), 'YOLOX-nano 416: 2 x (conv MACs + 2 x BN outputs) = %.4g vs '
              'published 1.08 GFLOPs (conv alone %.4g)' % (thop / 1e9, 2 * c['conv_macs'] / 1e9))
    else:
        print('skip YOLOX-nano (no %s)' % nano)
    print('test_cost: %s' % ('FAILED: %d' % len(FAILS) if FAILS else 'ok'))
    return 1 if FAILS else 0


if __name__ == '__main__':
    sys.exit(main())
