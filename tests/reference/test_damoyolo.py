#!/usr/bin/python3
"""Structural tests of the PyTorch DAMO-YOLO reference (tests/reference/damoyolo.py)
against the numbers of shared/docs/damoyolo.md, which were measured on the upstream
code. Prints "N passed, N failed"; exit status 1 on any failure.

Checks: parameter counts (train and deploy) equal to section 10 for all eight models;
Nano expansion widths of section 4.4; neck depth rounding; BN eps; RepConv training form
vs fused form; an independent numpy decode of the head (section 6) vs the model's boxes;
anchor counts A = 21*(S/32)^2; the T 640 deploy ONNX: 340 nodes with the exact op
histogram of section 9, 8,473,928 initializer values, names and shapes of inputs and
outputs; the training-form ONNX keeps BatchNormalization; every export uses only the
engine op set of section 9."""
import collections
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import damoyolo as dy  # noqa: E402
import parity  # noqa: E402

# Section 10: params train-form / deploy (M, 3 decimals).
PARAMS = {'T': (8.876, 8.480), 'S': (16.936, 16.252), 'M': (29.242, 28.178),
          'L': (43.862, 42.058), 'Ns': (1.406, 1.406), 'Nm': (2.707, 2.707),
          'Nl': (5.689, 5.689), 'N': (2.347, 2.347)}
# Section 9: T, 640, B=1, opset 11, torch 1.13, before simplification.
T_HIST = {'Conv': 77, 'Constant': 73, 'Relu': 69, 'Add': 22, 'Concat': 21, 'Reshape': 14,
          'Slice': 13, 'Transpose': 12, 'Mul': 6, 'Shape': 6, 'Sigmoid': 5, 'Gather': 4,
          'Unsqueeze': 4, 'MaxPool': 3, 'Cast': 3, 'Softmax': 3, 'Resize': 2, 'Sub': 2,
          'MatMul': 1}
T_INIT_VALUES = 8473928
# Section 9 table: Conv / Relu / Sigmoid / Mul / Add per model (raw export, B=1).
CONV_TABLE = {'T': (77, 69, 5, 6, 22), 'S': (83, 75, 5, 6, 25), 'M': (111, 16, 92, 93, 35),
              'L': (141, 16, 122, 123, 50), 'Ns': (91, 0, 69, 70, 16),
              'Nm': (91, 0, 69, 70, 16), 'Nl': (94, 0, 71, 72, 18), 'N': (91, 0, 69, 70, 17)}
ENGINE_OPS = {'Conv', 'Relu', 'Sigmoid', 'Mul', 'Add', 'Sub', 'Concat', 'MaxPool', 'Resize',
              'Upsample', 'Reshape', 'Transpose', 'Softmax', 'MatMul', 'Slice', 'Gather',
              'Unsqueeze', 'Cast', 'Shape', 'Constant', 'Identity'}
# Section 4.4: expansion widths of the first block of each Nano stage.
NANO_E = {'Ns': [88, 160, 288, 400, 880], 'Nm': [144, 256, 504, 640, 1408],
          'Nl': [168, 320, 720, 800, 1760], 'N': [144, 320, 504, 560, 880]}


class Report(parity.Report):
    pass


def check_params(rep):
    for name, (tr, de) in PARAMS.items():
        m = dy.DAMOYOLO(name).eval()    # counts need no weight init
        ptr = dy.count_params(m)
        m.fuse()
        pde = dy.count_params(m)
        rep.check(round(ptr / 1e6, 3) == tr and round(pde / 1e6, 3) == de,
                  '%s params train %d (%.3f M, want %.3f), deploy %d (%.3f M, want %.3f)'
                  % (name, ptr, ptr / 1e6, tr, pde, pde / 1e6, de))


def check_nano_and_bn(rep):
    for name, want in NANO_E.items():
        m = dy.DAMOYOLO(name)
        got = [st.block_list[0].conv[0].out_channels for st in m.backbone.block_list[1:]]
        rep.check(got == want, '%s Nano expansions %s (want %s)' % (name, got, want))
    m = dy.DAMOYOLO('M')
    rep.check(len(m.neck.merge_3.convs) == 4, 'M neck depth round(4.5) = 4 (banker\'s)')
    eps = {mod.eps for mod in dy.DAMOYOLO('T').modules()
           if isinstance(mod, torch.nn.BatchNorm2d)}
    rep.check(eps == {1e-3}, 'all BN eps 1e-3 (got %s)' % sorted(eps))
    rc = [mod for mod in dy.DAMOYOLO('T').modules() if isinstance(mod, dy.RepConv)]
    rep.check(all(not hasattr(r, 'rbr_identity') for r in rc) and len(rc) == 24,
              'T has 24 RepConvs (9 backbone + 15 neck), none with an identity branch')


def check_fused(rep, name, size):
    """Training form vs fused deploy form on the same weights and input."""
    m = dy.build(name, 0, 'train')
    x = torch.from_numpy(dy.make_input(1, size, 3))
    with torch.no_grad():
        s0, b0 = m(x)
        m.fuse()
        s1, b1 = m(x)
    rs = float((s1 - s0).norm() / s0.norm())
    rb = float((b1 - b0).norm() / b0.norm())
    ms, mb = float((s1 - s0).abs().max()), float((b1 - b0).abs().max())
    rep.check(rs < 1e-5 and rb < 1e-5 and ms < 1e-4 and mb < 0.05,
              '%s@%d train vs fused: rel scores %.2g boxes %.2g, max abs %.2g / %.3g px'
              % (name, size, rs, rb, ms, mb))


def check_decode(rep, name, size, batch=2):
    """Re-decode the head's raw per-level conv outputs with numpy (section 6) and compare
    with the model's scores and boxes; also A and the output shapes."""
    m = dy.build(name, 1, 'deploy')
    raw = {}
    hooks = []
    for l in range(3):
        hooks.append(m.head.gfl_cls[l].register_forward_hook(
            lambda mod, i, o, l=l: raw.__setitem__(('cls', l), o.detach().numpy())))
        hooks.append(m.head.gfl_reg[l].register_forward_hook(
            lambda mod, i, o, l=l: raw.__setitem__(('reg', l), o.detach().numpy())))
    x = torch.from_numpy(dy.make_input(batch, size, 5))
    with torch.no_grad():
        scores, boxes = m(x)
    for h in hooks:
        h.remove()
    A = 21 * (size // 32) ** 2
    rep.check(list(scores.shape) == [batch, A, 80] and list(boxes.shape) == [batch, A, 4],
              '%s@%d b%d: outputs %s %s, A = 21*(S/32)^2 = %d'
              % (name, size, batch, list(scores.shape), list(boxes.shape), A))
    R = m.head.reg_max
    ref_s, ref_b = [], []
    for l, s in enumerate((8, 16, 32)):
        cls = raw[('cls', l)].astype(np.float64)
        reg = raw[('reg', l)].astype(np.float64) * float(m.head.scales[l].scale)
        n, _, h, w = reg.shape
        ref_s.append((1 / (1 + np.exp(-cls))).reshape(n, 80, h * w).transpose(0, 2, 1))
        logits = reg.reshape(n, 4, R + 1, h * w)              # sides l, t, r, b
        p = np.exp(logits - logits.max(2, keepdims=True))
        p /= p.sum(2, keepdims=True)
        d = (p * np.arange(R + 1)[None, None, :, None]).sum(2) * s   # [n, 4, hw]
        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
        px, py = (gx.ravel() * s)[None], (gy.ravel() * s)[None]     # no +0.5
        ref_b.append(np.stack([px - d[:, 0], py - d[:, 1], px + d[:, 2], py + d[:, 3]], -1))
    ref_s, ref_b = np.concatenate(ref_s, 1), np.concatenate(ref_b, 1)
    es = np.abs(scores.numpy() - ref_s).max()
    eb = np.abs(boxes.numpy() - ref_b).max()
    rep.check(es < 1e-5 and eb < 1e-3,
              '%s@%d independent numpy decode: max |d scores| %.2g, |d boxes| %.2g px'
              % (name, size, es, eb))


def onnx_hist(path):
    import onnx
    g = onnx.load(path).graph
    return g, collections.Counter(n.op_type for n in g.node)


def dims(v):
    return [d.dim_value for d in v.type.tensor_type.shape.dim]


def check_onnx(rep):
    d = parity.damoyolo_export('T', 'deploy', 640, 1, 0)
    g, hist = onnx_hist(os.path.join(d, 'model.onnx'))
    rep.check(sum(hist.values()) == 340 and dict(hist) == T_HIST,
              'T 640 deploy ONNX: %d nodes, histogram %s' % (
                  sum(hist.values()), 'as section 9' if dict(hist) == T_HIST else dict(hist)))
    nvals = sum(int(np.prod(i.dims)) for i in g.initializer)
    rep.check(nvals == T_INIT_VALUES, 'T 640 ONNX initializer values %d (want %d)'
              % (nvals, T_INIT_VALUES))
    convs = [n for n in g.node if n.op_type == 'Conv']
    rep.check(all(len(n.input) == 3 for n in convs), 'every Conv of the deploy export has a bias')
    ok = (len(g.input) == 1 and g.input[0].name == 'images' and dims(g.input[0]) == [1, 3, 640, 640]
          and len(g.output) == 2 and g.output[0].name == 'output'
          and dims(g.output[0]) == [1, 8400, 80] and dims(g.output[1]) == [1, 8400, 4])
    rep.check(ok, 'T ONNX io: images [1,3,640,640] -> output [1,8400,80], %s %s'
              % (g.output[1].name, dims(g.output[1])))
    rep.check(set(hist) <= ENGINE_OPS, 'T op set within the engine op set of section 9')
    # Other models: per-model counts of section 9 (B=1; sizes only change shapes).
    for name, size in (('S', 320), ('M', 320), ('L', 320), ('Ns', 416), ('Nm', 416),
                       ('Nl', 416), ('N', 416), ('T', 320)):
        d = parity.damoyolo_export(name, 'deploy', size, 1, 0)
        g, h = onnx_hist(os.path.join(d, 'model.onnx'))
        got = tuple(h.get(k, 0) for k in ('Conv', 'Relu', 'Sigmoid', 'Mul', 'Add'))
        rep.check(got == CONV_TABLE[name] and set(h) <= ENGINE_OPS,
                  '%s@%d ONNX Conv/Relu/Sigmoid/Mul/Add %s (want %s), op set ok: %s'
                  % (name, size, got, CONV_TABLE[name], set(h) <= ENGINE_OPS))
    for name, size in (('T', 320), ('Ns', 416)):
        d = parity.damoyolo_export(name, 'train', size, 1, 0)
        g, h = onnx_hist(os.path.join(d, 'model.onnx'))
        nbn = h.get('BatchNormalization', 0)
        nbn_want = sum(isinstance(mm, torch.nn.BatchNorm2d) for mm in dy.DAMOYOLO(name).modules())
        rep.check(nbn == nbn_want, '%s train-form ONNX keeps %d BatchNormalization (want %d)'
                  % (name, nbn, nbn_want))


def main():
    torch.set_num_threads(2)
    rep = Report()
    check_params(rep)
    check_nano_and_bn(rep)
    for name in ('T', 'S', 'M'):     # L: same blocks as M; Nano: no RepConv
        check_fused(rep, name, 96)
    check_decode(rep, 'T', 192)
    check_decode(rep, 'Nl', 128, 1)
    check_decode(rep, 'N', 224, 1)
    check_onnx(rep)
    return rep.done()


if __name__ == '__main__':
    sys.exit(main())
