#!/usr/bin/env python3
"""Throughput of batchdet vs its peers on one GPU (issue 7), DAMO-YOLO T and S at 640.

Peers, all with the same seeded weights as tests/reference/damoyolo.py exports:
  torch-fp32      eager PyTorch FP32 (deploy form: RepConv fused)
  torch-bf16      eager, torch.autocast(bfloat16), channels_last
  compile-bf16    torch.compile(mode=max-autotune) of the bf16 channels_last model
  ort-cuda-fp16   onnxruntime CUDA EP on an FP16 export (IO binding, device tensors);
                  skipped with a reason if the CUDA EP does not load
  batchdet        `$BATCHDET bench --device cuda --model M --batch B --iters N --json`;
                  "n/a" if it fails or its JSON lacks a throughput figure
Each cell: warm-up, then per-iteration fresh random uint8-valued inputs (generated on the
GPU outside the timed region), median of CUDA-event-timed forward passes (ORT: events on
the stream handed to ORT as user_compute_stream). Peak memory: torch's
max_memory_allocated for torch rows, device-level used-memory growth for ORT, and
whatever batchdet's JSON reports. One table: img/s, ms/batch, peak MiB and our ratio to
the best peer (img/s ours / best peer) per model and batch.

  gpu_peers.py [--models T,S] [--batches 1,8,32,64] [--size 640] [--iters 50]
               [--warmup 10] [--quick] [--batchdet PATH] [--skip compile,ort]
--quick: batches 1 and 32, 15 iterations, 3 warm-up, compile mode 'max-autotune-no-
cudagraphs' unless --compile-mode is given (autotuning every shape costs minutes).
Needs PyTorch 2.x with CUDA, numpy, and onnxruntime-gpu for the ORT row. Seen on the
H200 device machine (torch 2.11.0+cu130, onnxruntime 1.30.0): its onnxruntime has no
CUDAExecutionProvider (row reported n/a), and the full batchdet binary lacks libhiredis
and friends there: build it on the device with -DBATCHDET_ENGINE_ONLY=ON
-DCMAKE_BUILD_TYPE=Release. Without a GPU it only answers --help.
Example (device, ~3 min): gpu_peers.py --quick --models T --batchdet build-gpu/cli/batchdet
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, 'tests', 'reference'))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def time_cuda(torch, fn, make_input, iters, warmup, stream=None):
    """Median ms of fn(x) over iters, CUDA events on `stream` (default current)."""
    stream = stream or torch.cuda.current_stream()
    for _ in range(warmup):
        fn(make_input())
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        x = make_input()
        torch.cuda.synchronize()
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record(stream)
        fn(x)
        b.record(stream)
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def torch_rows(torch, dy, name, batches, size, args, results):
    base = dy.build(name, args.seed, 'deploy').cuda().eval()
    variants = [('torch-fp32', base, None)]
    bf = dy.build(name, args.seed, 'deploy').cuda().eval().to(memory_format=torch.channels_last)
    variants.append(('torch-bf16', bf, None))
    if 'compile' not in args.skip:
        try:
            import torch._dynamo
            torch._dynamo.config.cache_size_limit = 64
            comp = torch.compile(bf, mode=args.compile_mode, dynamic=False)
            variants.append(('compile-bf16', comp, None))
        except Exception as e:  # noqa: BLE001
            log('torch.compile unavailable: %s' % e)
            for b in batches:
                results[(name, b, 'compile-bf16')] = {'err': str(e)[:60]}
    for label, model, _ in variants:
        for b in batches:
            bf16 = label != 'torch-fp32'

            def make_input():
                x = torch.randint(0, 256, (b, 3, size, size), device='cuda').float()
                return x.contiguous(memory_format=torch.channels_last) if bf16 else x

            def fn(x):
                with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16,
                                                     enabled=bf16):
                    return model(x)
            try:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                t0 = time.time()
                ms = time_cuda(torch, fn, make_input, args.iters, args.warmup)
                peak = torch.cuda.max_memory_allocated() / 2**20
                results[(name, b, label)] = {'ms': ms, 'mib': peak}
                log('%s b%d %s: %.3f ms (%.0f s incl. warm-up/compile)'
                    % (name, b, label, ms, time.time() - t0))
            except Exception as e:  # noqa: BLE001
                log('%s b%d %s failed: %s' % (name, b, label, e))
                results[(name, b, label)] = {'err': str(e).splitlines()[0][:60]}
    del variants, base, bf
    torch.cuda.empty_cache()


def ort_rows(torch, dy, name, batches, size, args, results, tmp):
    label = 'ort-cuda-fp16'
    try:
        import onnxruntime as ort
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise RuntimeError('CUDAExecutionProvider not available (%s)'
                               % ort.get_available_providers())
    except Exception as e:  # noqa: BLE001
        for b in batches:
            results[(name, b, label)] = {'err': str(e).splitlines()[0][:60]}
        log('onnxruntime CUDA EP unavailable: %s' % e)
        return
    import numpy as np
    model = dy.build(name, args.seed, 'deploy').cuda().eval().half()
    stream = torch.cuda.Stream()
    for b in batches:
        try:
            path = os.path.join(tmp, '%s_fp16_b%d.onnx' % (name, b))
            x16 = torch.randint(0, 256, (b, 3, size, size), device='cuda').half()
            dy.export_onnx(model, x16, path, 'deploy')
            torch.cuda.synchronize()
            free0 = torch.cuda.mem_get_info()[0]
            prov = [('CUDAExecutionProvider', {'device_id': torch.cuda.current_device(),
                                               'user_compute_stream': str(stream.cuda_stream)})]
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(path, so, providers=prov)
            if 'CUDAExecutionProvider' not in sess.get_providers():
                raise RuntimeError('session fell back to %s' % sess.get_providers())
            io = sess.io_binding()
            outs = [o.name for o in sess.get_outputs()]
            buf = {}

            def make_input():
                buf['x'] = torch.randint(0, 256, (b, 3, size, size), device='cuda').half()
                return buf['x']

            def fn(x):
                io.bind_input('images', 'cuda', torch.cuda.current_device(), np.float16,
                              list(x.shape), x.data_ptr())
                for o in outs:
                    io.bind_output(o, 'cuda')
                sess.run_with_iobinding(io)
            ms = time_cuda(torch, fn, make_input, args.iters, args.warmup, stream)
            torch.cuda.synchronize()
            used = (free0 - torch.cuda.mem_get_info()[0]) / 2**20
            results[(name, b, label)] = {'ms': ms, 'mib': max(used, 0.0)}
            log('%s b%d %s: %.3f ms' % (name, b, label, ms))
            sess = io = None   # release the session before the next batch
        except Exception as e:  # noqa: BLE001
            log('%s b%d %s failed: %s' % (name, b, label, e))
            results[(name, b, label)] = {'err': str(e).splitlines()[0][:60]}
    del model
    torch.cuda.empty_cache()


def find_number(d, keys):
    """First numeric value in a (possibly nested) JSON object whose key is in keys."""
    if isinstance(d, dict):
        for k, v in d.items():
            if k in keys and isinstance(v, (int, float)):
                return float(v)
        for v in d.values():
            r = find_number(v, keys)
            if r is not None:
                return r
    return None


def ours_rows(torch, dy, name, batches, size, args, results, tmp):
    label = 'batchdet'
    path = os.path.join(tmp, '%s_fp32_b1.onnx' % name)
    try:
        model = dy.build(name, args.seed, 'deploy').eval()
        dy.export_onnx(model, torch.zeros(1, 3, size, size), path, 'deploy')
    except Exception as e:  # noqa: BLE001
        for b in batches:
            results[(name, b, label)] = {'err': 'export: %s' % str(e)[:50]}
        return
    for b in batches:
        cmd = shlex.split(args.batchdet) + ['bench', '--device', 'cuda', '--model', path,
                                            '--batch', str(b), '--iters', str(args.iters),
                                            '--warmup', str(args.warmup), '--json']
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=args.bench_timeout)
            if p.returncode != 0:
                raise RuntimeError('exit %d: %s' % (p.returncode, p.stderr.decode(
                    'utf-8', 'replace').strip().splitlines()[-1:]))
            line = [l for l in p.stdout.decode().splitlines() if l.strip().startswith('{')][-1]
            j = json.loads(line)
            log('%s b%d batchdet json: %s' % (name, b, line[:300]))
            # batchdet bench --json: p50_ms = median batch latency, img_s, ms_per_image
            ms = find_number(j, ('p50_ms', 'ms_per_batch', 'median_ms'))
            ips = find_number(j, ('img_s', 'img_per_s', 'images_per_s'))
            mib = find_number(j, ('peak_mib', 'peak_mem_mib', 'device_mem_mib', 'mem_mib'))
            if ms is None and ips:
                ms = 1000.0 * b / ips
            if ms is None:
                raise RuntimeError('no ms/throughput field in %s' % line[:80])
            results[(name, b, label)] = {'ms': ms, 'mib': mib}
        except Exception as e:  # noqa: BLE001
            log('%s b%d batchdet failed: %s' % (name, b, e))
            results[(name, b, label)] = {'err': str(e).splitlines()[0][:60] if str(e) else 'failed'}


def print_table(results, models, batches, impls):
    print('%-3s %5s  %-14s %10s %11s %10s  %s' % ('mdl', 'batch', 'impl', 'img/s',
                                                  'ms/batch', 'peak MiB', 'note'))
    for name in models:
        for b in batches:
            best = max((b * 1000.0 / r['ms'] for (n, bb, i), r in results.items()
                        if n == name and bb == b and i != 'batchdet' and 'ms' in r),
                       default=None)
            for impl in impls:
                r = results.get((name, b, impl), {'err': 'not run'})
                if 'ms' in r:
                    ips = b * 1000.0 / r['ms']
                    mib = '%10.0f' % r['mib'] if r.get('mib') is not None else '%10s' % 'n/a'
                    note = ''
                    if impl == 'batchdet':
                        note = ('ratio to best peer %.2fx' % (ips / best)) if best else \
                            'ratio n/a (no peer)'
                    print('%-3s %5d  %-14s %10.1f %11.3f %s  %s' % (name, b, impl, ips,
                                                                   r['ms'], mib, note))
                else:
                    print('%-3s %5d  %-14s %10s %11s %10s  %s' % (
                        name, b, impl, 'n/a', 'n/a', 'n/a', r.get('err', '')))
    sys.stdout.flush()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', default='T,S')
    ap.add_argument('--batches', default='1,8,32,64')
    ap.add_argument('--size', type=int, default=640)
    ap.add_argument('--iters', type=int, default=50)
    ap.add_argument('--warmup', type=int, default=10)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--compile-mode', default=None)
    ap.add_argument('--skip', default='', help='comma list of: compile, ort, torch, ours')
    ap.add_argument('--batchdet', default=os.environ.get('BATCHDET') or
                    os.path.join(SRC, 'build', 'cli', 'batchdet'))
    ap.add_argument('--bench-timeout', type=int, default=300)
    args = ap.parse_args(argv)
    if args.quick:
        args.batches = '1,32' if args.batches == '1,8,32,64' else args.batches
        args.iters, args.warmup = min(args.iters, 15), min(args.warmup, 3)
    if args.compile_mode is None:
        args.compile_mode = 'max-autotune-no-cudagraphs' if args.quick else 'max-autotune'
    args.skip = set(s for s in args.skip.split(',') if s)
    import torch
    if not torch.cuda.is_available():
        log('gpu_peers: no CUDA device')
        return 1
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import damoyolo as dy
    models = args.models.split(',')
    batches = [int(b) for b in args.batches.split(',')]
    log('gpu_peers: %s, torch %s, models %s, batches %s, %dx%d, %d iters'
        % (torch.cuda.get_device_name(), torch.__version__, models, batches, args.size,
           args.size, args.iters))
    results = {}
    impls = ['torch-fp32', 'torch-bf16', 'compile-bf16', 'ort-cuda-fp16', 'batchdet']
    with tempfile.TemporaryDirectory(prefix='gpu_peers_') as tmp:
        for name in models:
            if 'ours' not in args.skip:   # first: it needs the GPU memory to itself
                ours_rows(torch, dy, name, batches, args.size, args, results, tmp)
            if 'torch' not in args.skip:
                torch_rows(torch, dy, name, batches, args.size, args, results)
            if 'ort' not in args.skip:
                ort_rows(torch, dy, name, batches, args.size, args, results, tmp)
            print_table(results, [name], batches, impls)   # partial results early
    print('\n== gpu_peers summary (%s, %dx%d, median of %d) =='
          % (torch.cuda.get_device_name(), args.size, args.size, args.iters))
    print_table(results, models, batches, impls)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
