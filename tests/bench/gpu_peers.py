#!/usr/bin/env python3
"""Throughput of batchdet vs its peers on one GPU (issue 7), DAMO-YOLO T and S at 640.

Peers, all with the same seeded weights as tests/reference/damoyolo.py exports (deploy
form: RepConv fused; BatchNorm folded into the convs here, as the ONNX export does; the
head's anchor grid cached instead of rebuilt with numpy on every call):
  torch-fp32      eager PyTorch FP32 (TF32 off)
  torch-bf16      eager, torch.autocast(bfloat16), channels_last
  compile-bf16    torch.compile(mode=max-autotune, dynamic=False) of the bf16
                  channels_last forward (autocast inside the compiled function)
  ort-cuda-fp16   onnxruntime CUDA EP on an FP16 export (IO binding, device tensors);
                  n/a with the reason when the CUDA EP does not load
  batchdet        `batchdet bench --device cuda --model M --batch B --json`: its
                  gpu_p50_ms (device time of the network alone, CUDA events, no host
                  copies) and dev_mem_mib; the host-clock p50 (with the FP32
                  host<->device copies) is in the note.
  batchdet-tuned  the same with --batchdet-env's settings in its environment (e.g.
                  BATCHDET_CUDA_WGMMA=1: what device_check.sh found faster in the same
                  call); a second row, not a peer; the targets are printed for it too.
Timing: W warm-up calls, then N calls, each on fresh random uint8-valued inputs made on
the GPU outside the timed region; CUDA events around each call; the median is kept.
Peak memory (MiB): torch rows: max_memory_reserved over the timed calls, after warm-up
and empty_cache (weights, activations, cuDNN/cuBLAS workspaces, CUDA-graph pools; not
the context or kernel code); ORT and batchdet: device used-memory growth (cudaMemGetInfo)
from before the session/engine to the end (everything incl. loaded kernels: a stricter
count than torch's).
One table: img/s, ms/batch, peak MiB, and batchdet's ratio to the best peer; then the
issue's three targets for DAMO-T as target/reached lines: b32 img/s >= 1.5x the best
peer; b1 latency <= 0.7x compile-bf16's; b32 peak memory <= 0.5x compile-bf16's.

  gpu_peers.py [--models T,S] [--batches 1,8,32,64] [--size 640] [--iters 30]
               [--warmup 5] [--impls LIST] [--compile-mode max-autotune]
               [--batchdet PATH] [--batchdet-env 'NAME=VALUE ...']
               [--onnx-dir DIR] [--save CELLS.jsonl]
  gpu_peers.py --table CELLS.jsonl [MORE.jsonl ...]     (no torch needed)
  gpu_peers.py --export-only --onnx-dir DIR [--models T,S] (FP32 ONNX for batchdet)
  gpu_peers.py --cpu-smoke [--batchdet PATH]            (no GPU: exercises the logic)
--save appends one JSON line per finished cell (so a process killed by a timeout keeps
what it finished); --table merges such files and prints the table and the targets.
tests/gpu/device_bench.sh runs this in time-bounded pieces on the device machine.
--cpu-smoke: T at 128 px, batch 2, 2 iterations on the CPU: torch-fp32 (and the BN
folding checked against the unfolded model), torch-bf16, compile-bf16 (mode default;
a 'no torch.compile' note on torch 1.x) and, with --batchdet, `batchdet bench --device
cpu`; then the table from the saved cells and the target arithmetic on made-up cells.
Exit 77 when torch is missing.
"""
import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, 'tests', 'reference'))

IMPLS = ['torch-fp32', 'torch-bf16', 'compile-bf16', 'ort-cuda-fp16', 'batchdet',
         'batchdet-tuned']
OURS = 'batchdet'
TUNED = 'batchdet-tuned'
OUR_ROWS = (OURS, TUNED)
ENV_NAME = re.compile(r'^[A-Z_][A-Z0-9_]{0,63}$')
ENV_VALUE = re.compile(r'^[A-Za-z0-9_.,:+-]{0,64}$')
COMPILE = 'compile-bf16'
TARGET_MODEL = 'T'


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def first_line(e):
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:90]


class Cells:
    """Results keyed by (model, batch, impl); appended to a JSON-lines file as they come."""

    def __init__(self, path=None):
        self.d = {}
        self.path = path

    def put(self, model, batch, impl, **kw):
        rec = dict(model=model, batch=batch, impl=impl, **kw)
        self.d[(model, batch, impl)] = rec
        if self.path:
            with open(self.path, 'a') as f:
                f.write(json.dumps(rec) + '\n')
                f.flush()
                os.fsync(f.fileno())
        if 'ms' in rec:
            log('%s b%d %-13s %9.3f ms  %s MiB  %s' % (model, batch, impl, rec['ms'],
                                                     '%.0f' % rec['mib'] if rec.get('mib')
                                                     is not None else 'n/a',
                                                     rec.get('note', '')))
        else:
            log('%s b%d %-13s n/a: %s' % (model, batch, impl, rec.get('err')))

    def load(self, path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith('{'):
                    continue
                try:
                    r = json.loads(line)
                    k = (r['model'], int(r['batch']), r['impl'])
                except (ValueError, KeyError):
                    continue
                # a measured cell is never replaced by a later failure note; two notes
                # are kept both (e.g. a timeout, then the fallback skipped)
                prev = self.d.get(k)
                if prev and 'ms' not in r:
                    if 'ms' in prev:
                        continue
                    r = dict(r, err='%s; then %s' % (prev.get('err'), r.get('err')))
                self.d[k] = r


# ---------------------------------------------------------------------------------------
# models

def fold_bn(torch, model):
    """Folds every eval-mode BatchNorm2d that follows a Conv2d in the same module
    (.conv/.bn, .conv1/.bn1) into the conv, as the ONNX export does. Returns the number
    of BN modules left unfolded (0 for the DAMO-YOLO reference)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    nn = torch.nn
    for mod in list(model.modules()):
        for cname, bname in (('conv', 'bn'), ('conv1', 'bn1')):
            c, b = getattr(mod, cname, None), getattr(mod, bname, None)
            if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                setattr(mod, cname, fuse_conv_bn_eval(c.eval(), b.eval()))
                setattr(mod, bname, nn.Identity())
    return sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def cache_priors(model):
    """The reference head rebuilds its anchor grid with numpy and copies it to the device
    on every call; a deployed model has it as a constant. Cached per (batch, sizes,
    device, dtype)."""
    head = model.head
    orig = head.priors
    cache = {}

    def priors(b, sizes, device, dtype):
        k = (int(b), tuple(tuple(s) for s in sizes), str(device), dtype)
        if k not in cache:
            cache[k] = orig(b, sizes, device, dtype)
        return cache[k]
    head.priors = priors
    return model


def peer_model(torch, dy, name, seed):
    m = dy.build(name, seed, 'deploy').eval()
    left = fold_bn(torch, m)
    if left:
        log('%s: %d BatchNorm2d modules left unfolded' % (name, left))
    for p in m.parameters():
        p.requires_grad_(False)
    return cache_priors(m)


def onnx_for(torch, dy, name, size, seed, onnx_dir, tmp):
    """FP32 deploy ONNX at batch 1 (the engine re-batches), reused from onnx_dir."""
    d = os.path.join(onnx_dir or tmp, '%s_%d_s%d' % (name, size, seed))
    path = os.path.join(d, 'model.onnx')
    if not os.path.exists(path):
        os.makedirs(d, exist_ok=True)
        model = dy.build(name, seed, 'deploy').eval()
        dy.export_onnx(model, torch.zeros(1, 3, size, size), path + '.tmp', 'deploy')
        os.replace(path + '.tmp', path)
    return path


# ---------------------------------------------------------------------------------------
# timing

def time_cell(torch, fn, make_input, iters, warmup, dev, stream=None):
    """Median ms of fn(x) over iters fresh inputs after warmup calls; CUDA events on
    `stream` (default: current) on a GPU, perf_counter on the CPU. Returns (ms, peak
    reserved MiB, peak allocated MiB) (memory None on the CPU)."""
    cuda = dev == 'cuda'
    for _ in range(warmup):
        fn(make_input())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        stream = stream or torch.cuda.current_stream()
    times = []
    for _ in range(iters):
        x = make_input()
        if cuda:
            torch.cuda.synchronize()
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record(stream)
            out = fn(x)
            b.record(stream)
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            out = fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
        del out, x
    if not cuda:
        return statistics.median(times), None, None
    return (statistics.median(times), torch.cuda.max_memory_reserved() / 2**20,
            torch.cuda.max_memory_allocated() / 2**20)


def input_maker(torch, b, size, dev, dtype, channels_last):
    def make():
        x = torch.randint(0, 256, (b, 3, size, size), device=dev).to(dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return make


def torch_cells(torch, dy, name, batches, args, cells, dev):
    impls = [i for i in ('torch-fp32', 'torch-bf16') if i in args.impls]
    if not impls:
        return
    base = peer_model(torch, dy, name, args.seed).to(dev)
    for impl in impls:
        bf16 = impl == 'torch-bf16'
        model = base.to(memory_format=torch.channels_last) if bf16 else base
        for b in batches:
            def fn(x):
                with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
                    return model(x)
            try:
                t0 = time.time()
                ms, res, alloc = time_cell(torch, fn, input_maker(torch, b, args.size, dev,
                                                                  torch.float32, bf16),
                                           args.iters, args.warmup, dev)
                cells.put(name, b, impl, ms=ms, mib=res, alloc_mib=alloc,
                          note='%.0f s' % (time.time() - t0))
            except Exception as e:  # noqa: BLE001
                cells.put(name, b, impl, err=first_line(e))
            if dev == 'cuda':
                torch.cuda.empty_cache()
    del base
    if dev == 'cuda':
        torch.cuda.empty_cache()


def compile_cells(torch, dy, name, batches, args, cells, dev):
    if COMPILE not in args.impls:
        return
    if not hasattr(torch, 'compile'):
        for b in batches:
            cells.put(name, b, COMPILE, err='torch %s has no torch.compile' % torch.__version__)
        return
    import torch._dynamo
    model = peer_model(torch, dy, name, args.seed).to(dev).to(memory_format=torch.channels_last)
    for b in batches:
        # A fresh compile per batch size: no recompilation guards in the way, and the
        # previous cell's CUDA-graph pools are released before this one is measured.
        torch._dynamo.reset()
        if dev == 'cuda':
            torch.cuda.empty_cache()

        def fwd(x):
            with torch.autocast(dev, dtype=torch.bfloat16):
                return model(x)
        try:
            # One eager call first: the anchor-grid cache is filled outside the trace, so
            # that the compiled graph sees constants, not numpy code.
            with torch.no_grad():
                fwd(input_maker(torch, b, args.size, dev, torch.float32, True)())
            comp = torch.compile(fwd, mode=args.compile_mode, dynamic=False)

            def fn(x):
                with torch.no_grad():
                    return comp(x)
            t0 = time.time()
            ms, res, alloc = time_cell(torch, fn, input_maker(torch, b, args.size, dev,
                                                              torch.float32, True),
                                       args.iters, args.warmup, dev)
            cells.put(name, b, COMPILE, ms=ms, mib=res, alloc_mib=alloc,
                      note='%s, %.0f s incl. compile' % (args.compile_mode, time.time() - t0))
        except Exception as e:  # noqa: BLE001
            cells.put(name, b, COMPILE, err=first_line(e))
    torch._dynamo.reset()


def ort_cells(torch, dy, name, batches, args, cells, tmp):
    label = 'ort-cuda-fp16'
    if label not in args.impls:
        return
    try:
        import onnxruntime as ort
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise RuntimeError('onnxruntime %s: no CUDAExecutionProvider (has %s)'
                               % (ort.__version__, ','.join(ort.get_available_providers())))
        import numpy as np
    except Exception as e:  # noqa: BLE001
        for b in batches:
            cells.put(name, b, label, err=first_line(e))
        return
    model = peer_model(torch, dy, name, args.seed).cuda().half()
    stream = torch.cuda.Stream()
    for b in batches:
        sess = io = None
        try:
            path = os.path.join(tmp, '%s_fp16_b%d.onnx' % (name, b))
            x16 = torch.randint(0, 256, (b, 3, args.size, args.size), device='cuda').half()
            dy.export_onnx(model, x16, path, 'deploy')
            del x16
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
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
            iname = sess.get_inputs()[0].name

            def fn(x):
                io.bind_input(iname, 'cuda', torch.cuda.current_device(), np.float16,
                              list(x.shape), x.data_ptr())
                for o in outs:
                    io.bind_output(o, 'cuda')
                sess.run_with_iobinding(io)
            ms, _, _ = time_cell(torch, fn, input_maker(torch, b, args.size, 'cuda',
                                                        torch.float16, False),
                                 args.iters, args.warmup, 'cuda', stream)
            torch.cuda.synchronize()
            used = (free0 - torch.cuda.mem_get_info()[0]) / 2**20
            cells.put(name, b, label, ms=ms, mib=max(used, 0.0),
                      note='onnxruntime %s' % ort.__version__)
        except Exception as e:  # noqa: BLE001
            cells.put(name, b, label, err=first_line(e))
        sess = io = None   # release the session before the next batch
    del model
    torch.cuda.empty_cache()


def num(j, k):
    v = j.get(k)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_env(text):
    """'NAME=VALUE NAME2=VALUE2' -> dict, names and values checked; ValueError else."""
    env = {}
    for tok in text.split():
        k, eq, v = tok.partition('=')
        if not eq or not ENV_NAME.match(k) or not ENV_VALUE.match(v):
            raise ValueError('not NAME=VALUE (A-Z0-9_ = A-Za-z0-9_.,:+-): %r' % tok)
        env[k] = v
    if not env:
        raise ValueError('no NAME=VALUE in %r' % text)
    return env


def ours_cells(torch, dy, name, batches, args, cells, tmp, dev):
    rows = [(OURS, {})] if OURS in args.impls else []
    if TUNED in args.impls:
        rows.append((TUNED, args.batchdet_env))
    if not rows:
        return
    try:
        path = onnx_for(torch, dy, name, args.size, args.seed, args.onnx_dir, tmp)
    except Exception as e:  # noqa: BLE001
        for b in batches:
            for impl, _ in rows:
                cells.put(name, b, impl, err='export: %s' % first_line(e))
        return
    for impl, extra in rows:
        ours_rows(name, path, batches, args, cells, dev, impl, extra)


def ours_rows(name, path, batches, args, cells, dev, impl, extra):
    """One batchdet row: `batchdet bench --json` per batch, EXTRA added to its
    environment (the tuned row; its note names them)."""
    tag = ' '.join('%s=%s' % kv for kv in sorted(extra.items()))
    base = dict(os.environ, **extra) if extra else None
    kw = dict(env=tag) if tag else {}
    for b in batches:
        cmd = shlex.split(args.batchdet) + ['bench', '--device', dev, '--model', path,
                                            '--batch', str(b), '--iters', str(args.iters),
                                            '--warmup', str(args.warmup), '--json']
        if dev == 'cpu':
            cmd += ['--threads', '2']
        t0 = time.time()
        try:
            how = '%s, ' % tag if tag else ''
            try:
                j = bench_json(cmd, base, args.bench_timeout)
            except RuntimeError as e:
                if extra:
                    raise   # the tuned row is its settings or nothing
                # cuDNN's graph API (in the conv choice by default) has not run on a GPU
                # before: a failure there must not cost the row; the run again without it
                # gives the number, and the note says which it is.
                env = dict(os.environ, BATCHDET_CUDA_DNN_GRAPH='0')
                j = bench_json(cmd, env, args.bench_timeout)
                how = 'cuDNN graph API off (the default failed: %s), ' % first_line(e)
            gpu, host = num(j, 'gpu_p50_ms'), num(j, 'p50_ms')
            note = ('host p50 %.3f ms incl. copies' % host if gpu is not None and host
                    else 'host clock (no gpu_p50_ms)')
            cells.put(name, b, impl, ms=gpu if gpu is not None else host,
                      mib=num(j, 'dev_mem_mib'), host_ms=host, load_ms=num(j, 'load_ms'),
                      note='%s%s, %.0f s' % (how, note, time.time() - t0), **kw)
        except subprocess.TimeoutExpired:
            cells.put(name, b, impl, err='timeout after %d s' % args.bench_timeout, **kw)
        except Exception as e:  # noqa: BLE001
            cells.put(name, b, impl, err=first_line(e), **kw)


def bench_json(cmd, env, timeout):
    """`batchdet bench ... --json` run once (env: None, this process's); its last JSON line
    with a time in it, else RuntimeError."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=env)
    if p.returncode != 0:
        raise RuntimeError('exit %d: %s' % (p.returncode, ' '.join(
            p.stderr.decode('utf-8', 'replace').strip().splitlines()[-1:])))
    lines = [ln for ln in p.stdout.decode().splitlines() if ln.strip().startswith('{')]
    if not lines:
        raise RuntimeError('no JSON line in: %s' % p.stdout.decode()[:80])
    j = json.loads(lines[-1])
    if num(j, 'gpu_p50_ms') is None and num(j, 'p50_ms') is None:
        raise RuntimeError('neither gpu_p50_ms nor p50_ms in %s' % lines[-1][:80])
    return j


# ---------------------------------------------------------------------------------------
# report

def ips(r, b):
    return b * 1000.0 / r['ms'] if r and 'ms' in r and r['ms'] > 0 else None


def best_peer(cells, model, b):
    best = None
    for impl in IMPLS:
        r = cells.d.get((model, b, impl))
        if impl in OUR_ROWS or not r or ips(r, b) is None:
            continue
        if best is None or ips(r, b) > best[1]:
            best = (impl, ips(r, b))
    return best


def print_table(cells, title):
    models = sorted(set(k[0] for k in cells.d), key=lambda m: (m != 'T', m))
    print('\n== %s ==' % title)
    print('%-3s %5s  %-13s %10s %11s %9s  %s' % ('mdl', 'batch', 'impl', 'img/s', 'ms/batch',
                                                 'peak MiB', 'note'))
    tuned = any(k[2] == TUNED for k in cells.d)
    for m in models:
        for b in sorted(set(k[1] for k in cells.d if k[0] == m)):
            bp = best_peer(cells, m, b)
            for impl in IMPLS:
                if impl == TUNED and not tuned:
                    continue   # not asked for in this run: no row of 'not run's
                r = cells.d.get((m, b, impl))
                if r is None:
                    print('%-3s %5d  %-13s %10s %11s %9s  %s' % (m, b, impl, 'n/a', 'n/a', 'n/a',
                                                                 'not run (time budget or an '
                                                                 'earlier step failed)'))
                    continue
                if 'ms' not in r:
                    print('%-3s %5d  %-13s %10s %11s %9s  %s' % (m, b, impl, 'n/a', 'n/a', 'n/a',
                                                                 r.get('err', '')))
                    continue
                note = r.get('note', '')
                if impl in OUR_ROWS:
                    note = ('%.2fx best peer (%s); %s' % (ips(r, b) / bp[1], bp[0], note)
                            if bp else 'no peer measured; ' + note)
                mib = '%9.0f' % r['mib'] if r.get('mib') is not None else '%9s' % 'n/a'
                print('%-3s %5d  %-13s %10.1f %11.3f %s  %s' % (m, b, impl, ips(r, b), r['ms'],
                                                               mib, note))
    sys.stdout.flush()


def print_targets(cells, model=TARGET_MODEL):
    """The issue's three targets as target/reached lines: for the batchdet row, then for
    the batchdet-tuned row when the cells have one."""
    print_targets_of(cells, model, OURS)
    if any(k[0] == model and k[2] == TUNED for k in cells.d):
        print_targets_of(cells, model, TUNED)


def print_targets_of(cells, model, ours):
    g = cells.d.get
    if ours == OURS:
        print('\n== issue 7 targets, DAMO-%s ==' % model)
    else:
        r = g((model, 32, ours)) or g((model, 1, ours)) or {}
        print('\n== issue 7 targets, DAMO-%s, %s (%s) ==' % (model, ours,
                                                            r.get('env', 'settings unknown')))

    def ok(x):
        return x is not None and 'ms' in x

    o32, o1 = g((model, 32, ours)), g((model, 1, ours))
    c32, c1 = g((model, 32, COMPILE)), g((model, 1, COMPILE))
    bp = best_peer(cells, model, 32)

    def mode(r):   # which torch.compile mode produced the cell (first word of its note)
        m = (r.get('note') or '').split(',')[0]
        return '; compile mode %s' % m if m else ''

    def why(*rs):
        for name, r in rs:
            if not ok(r):
                return '%s %s' % (name, (r or {}).get('err', 'not run'))
        return ''
    # 1. throughput at batch 32
    if ok(o32) and bp:
        r = ips(o32, 32) / bp[1]
        print('b32 img/s vs best peer: target >= 1.50x; reached %.2fx (%.0f vs %s %.0f img/s) %s'
              % (r, ips(o32, 32), bp[0], bp[1], 'MET' if r >= 1.5 else 'NOT MET'))
    else:
        print('b32 img/s vs best peer: target >= 1.50x; reached n/a (%s)'
              % (why((ours, o32)) or 'no peer measured'))
    # 2. batch-1 latency vs torch.compile
    if ok(o1) and ok(c1):
        r = o1['ms'] / c1['ms']
        print('b1 latency vs compile-bf16: target <= 0.70x; reached %.2fx (%.3f vs %.3f ms) %s'
              '%s' % (r, o1['ms'], c1['ms'], 'MET' if r <= 0.7 else 'NOT MET', mode(c1)))
    else:
        print('b1 latency vs compile-bf16: target <= 0.70x; reached n/a (%s)'
              % why((ours, o1), ('compile-bf16', c1)))
    # 3. peak memory at batch 32 vs torch.compile
    if ok(o32) and ok(c32) and o32.get('mib') is not None and c32.get('mib'):
        r = o32['mib'] / c32['mib']
        print('b32 peak memory vs compile-bf16: target <= 0.50x; reached %.2fx (%.0f vs %.0f MiB)'
              ' %s%s' % (r, o32['mib'], c32['mib'], 'MET' if r <= 0.5 else 'NOT MET', mode(c32)))
    else:
        print('b32 peak memory vs compile-bf16: target <= 0.50x; reached n/a (%s)'
              % (why((ours, o32), ('compile-bf16', c32)) or 'memory not reported'))
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------

def check_targets_logic():
    """The report's arithmetic on made-up cells whose answers are known: batchdet 2.00x
    the best peer at b32 (met), 0.50x compile's b1 latency (met), 0.67x its b32 memory
    (not met); a tuned row 2.50x / 0.45x / 0.60x that is no peer of the first. Returns
    the failures."""
    import contextlib
    import io
    c = Cells()
    for impl, ms32, mib, ms1 in (('torch-fp32', 40.0, 900.0, 5.0), ('torch-bf16', 25.0, 500.0, 4.0),
                                 (COMPILE, 20.0, 150.0, 2.0), (OURS, 10.0, 100.0, 1.0)):
        c.d[('T', 32, impl)] = dict(ms=ms32, mib=mib)
        c.d[('T', 1, impl)] = dict(ms=ms1, mib=mib)
    c.d[('T', 32, 'ort-cuda-fp16')] = dict(err='no CUDAExecutionProvider')
    c.d[('T', 32, TUNED)] = dict(ms=8.0, mib=90.0, env='BATCHDET_CUDA_WGMMA=1')
    c.d[('T', 1, TUNED)] = dict(ms=0.9, mib=90.0, env='BATCHDET_CUDA_WGMMA=1')
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_table(c, 'synthetic')
        print_targets(c)
    out = buf.getvalue()
    want = ['reached 2.00x (3200 vs compile-bf16 1600 img/s) MET',
            'reached 0.50x (1.000 vs 2.000 ms) MET',
            'reached 0.67x (100 vs 150 MiB) NOT MET',
            '2.00x best peer (compile-bf16)', 'no CUDAExecutionProvider',
            'issue 7 targets, DAMO-T, batchdet-tuned (BATCHDET_CUDA_WGMMA=1)',
            'reached 2.50x (4000 vs compile-bf16 1600 img/s) MET',
            'reached 0.45x (0.900 vs 2.000 ms) MET',
            'reached 0.60x (90 vs 150 MiB) NOT MET',
            '2.50x best peer (compile-bf16)']
    bad = ['synthetic report lacks %r' % w for w in want if w not in out]
    # the tuned row's targets come after the default's
    if out.find('reached 2.00x') > out.find('reached 2.50x'):
        bad.append('tuned targets before the default ones')
    return bad


def cpu_smoke(args):
    """The script's logic on the CPU: BN folding checked against the unfolded model, one
    torch-fp32 cell, one batchdet --device cpu cell when a binary is given, the saved
    cells read back into the table. Returns the exit code."""
    try:
        import torch
    except ImportError:
        print('gpu_peers --cpu-smoke: no torch (skipped)')
        return 77
    import damoyolo as dy
    torch.set_num_threads(2)
    bad = []
    ref = dy.build('T', args.seed, 'deploy').eval()
    mine = peer_model(torch, dy, 'T', args.seed)
    x = torch.from_numpy(dy.make_input(2, args.size, args.seed))
    with torch.no_grad():
        s0, b0 = ref(x)
        s1, b1 = mine(x)
        s2, b2 = mine(x)    # second call: cached anchors
    for nm, a, b in (('scores', s0, s1), ('boxes', b0, b1), ('boxes (cached anchors)', b0, b2)):
        rel = float((a - b).norm() / a.norm())
        print('fold check %-22s rel L2 %.2e' % (nm, rel))
        if not rel < 1e-4:
            bad.append('BN folding changed %s (rel L2 %.2e)' % (nm, rel))
    nbn = sum(1 for m in mine.modules() if isinstance(m, torch.nn.BatchNorm2d))
    if nbn:
        bad.append('%d BatchNorm2d left after folding' % nbn)
    with tempfile.TemporaryDirectory(prefix='gpu_peers_smoke_') as tmp:
        save = os.path.join(tmp, 'cells.jsonl')
        cells = Cells(save)
        torch_cells(torch, dy, 'T', [2], args, cells, 'cpu')
        # torch.compile on the CPU: a real cell with torch 2.x, a 'no torch.compile' note
        # with Debian's 1.13; either way the code path runs
        compile_cells(torch, dy, 'T', [2], args, cells, 'cpu')
        if args.batchdet_given:
            ours_cells(torch, dy, 'T', [2], args, cells, tmp, 'cpu')
            # the fallback: a batchdet that fails unless the graph API is off still gives
            # its row, noted as such
            real = args.batchdet
            args.batchdet = ('sh -c \'[ "$BATCHDET_CUDA_DNN_GRAPH" = 0 ] || '
                             '{ echo refused >&2; exit 3; }; exec "$0" "$@"\' ' +
                             shlex.quote(real))
            fb = Cells()
            ours_cells(torch, dy, 'T', [2], args, fb, tmp, 'cpu')
            args.batchdet = real
            r = fb.d.get(('T', 2, OURS)) or {}
            print('fallback cell: %s' % r)
            if not r.get('ms') or 'graph API off' not in r.get('note', ''):
                bad.append('fallback without the graph API: %s' % r)
            # the tuned row: its settings reach batchdet's environment (the wrapper
            # refuses without them), its cell and note name them, and a failure there is
            # an error cell rather than the default's graph-API fallback
            args.batchdet = ('sh -c \'[ "$BD_SMOKE_TUNED" = yes ] || '
                             '{ echo no tuned env >&2; exit 3; }; exec "$0" "$@"\' ' +
                             shlex.quote(real))
            path = onnx_for(torch, dy, 'T', args.size, args.seed, args.onnx_dir, tmp)
            tc = Cells()
            ours_rows('T', path, [2], args, tc, 'cpu', TUNED, {'BD_SMOKE_TUNED': 'yes'})
            ours_rows('T', path, [3], args, tc, 'cpu', TUNED, {'BD_SMOKE_TUNED': 'no'})
            args.batchdet = real
            r, r3 = tc.d.get(('T', 2, TUNED)) or {}, tc.d.get(('T', 3, TUNED)) or {}
            print('tuned cells: %s / %s' % (r, r3))
            if (not r.get('ms') or r.get('env') != 'BD_SMOKE_TUNED=yes' or
                    not r.get('note', '').startswith('BD_SMOKE_TUNED=yes, ')):
                bad.append('tuned cell: %s' % r)
            if 'ms' in r3 or 'no tuned env' not in r3.get('err', ''):
                bad.append('tuned cell without its settings: %s' % r3)
        back = Cells()
        back.load(save)
        print_table(back, 'gpu_peers --cpu-smoke (CPU, T %d px, batch 2, %d iterations)'
                    % (args.size, args.iters))
        print_targets(back)
        want = ['torch-fp32', 'torch-bf16'] + ([OURS] if args.batchdet_given else [])
        if hasattr(torch, 'compile'):
            want.append(COMPILE)
        for impl in want:
            r = back.d.get(('T', 2, impl))
            if not r or 'ms' not in r or not r['ms'] > 0:
                bad.append('%s cell: %s' % (impl, (r or {}).get('err', 'missing')))
        if len(back.d) != len(cells.d):
            bad.append('saved %d cells, read back %d' % (len(cells.d), len(back.d)))
    bad += check_targets_logic()
    for b in bad:
        print('FAIL: ' + b)
    print('gpu_peers --cpu-smoke: %s' % ('FAILED' if bad else 'ok'))
    return 1 if bad else 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', default='T,S')
    ap.add_argument('--batches', default='1,8,32,64')
    ap.add_argument('--size', type=int, default=640)
    ap.add_argument('--iters', type=int, default=30)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--impls', default=None,
                    help='default: all but batchdet-tuned, which --batchdet-env adds')
    ap.add_argument('--compile-mode', default='max-autotune')
    ap.add_argument('--batchdet', default=None)
    ap.add_argument('--batchdet-env', default=None, metavar="'NAME=VALUE ...'",
                    help='settings for the batchdet-tuned row (e.g. BATCHDET_CUDA_WGMMA=1)')
    ap.add_argument('--bench-timeout', type=int, default=120)
    ap.add_argument('--onnx-dir', default=None, help='cache of the FP32 ONNX exports')
    ap.add_argument('--save', default=None, help='append one JSON line per cell')
    ap.add_argument('--table', nargs='+', default=None, help='print the table from files')
    ap.add_argument('--cpu-smoke', action='store_true')
    ap.add_argument('--export-only', action='store_true')
    args = ap.parse_args(argv)
    if args.impls is None:
        args.impls = ','.join(i for i in IMPLS if i != TUNED or args.batchdet_env)
    args.impls = set(i for i in args.impls.split(',') if i)
    unknown = args.impls - set(IMPLS)
    if unknown:
        ap.error('unknown impls %s (known: %s)' % (sorted(unknown), ','.join(IMPLS)))
    if args.batchdet_env is not None:
        try:
            args.batchdet_env = parse_env(args.batchdet_env)
        except ValueError as e:
            ap.error('--batchdet-env: %s' % e)
    elif TUNED in args.impls:
        ap.error('%s needs --batchdet-env' % TUNED)
    args.batchdet_given = args.batchdet is not None or 'BATCHDET' in os.environ
    args.batchdet = (args.batchdet or os.environ.get('BATCHDET') or
                     os.path.join(SRC, 'build', 'cli', 'batchdet'))
    if args.table:
        cells = Cells()
        for p in args.table:
            if os.path.exists(p):
                cells.load(p)
            else:
                log('gpu_peers: %s missing' % p)
        print_table(cells, 'gpu_peers (%d cells from %s)' % (len(cells.d), ', '.join(args.table)))
        print_targets(cells)
        return 0
    if args.cpu_smoke:
        if args.size == 640:
            args.size = 128
        args.iters, args.warmup = min(args.iters, 2), min(args.warmup, 1)
        args.impls = {'torch-fp32', 'torch-bf16', COMPILE, OURS}
        args.compile_mode = 'default'
        return cpu_smoke(args)
    import torch
    if args.export_only:
        import damoyolo as dy
        torch.set_num_threads(min(8, os.cpu_count() or 1))
        for name in [m for m in args.models.split(',') if m]:
            t0 = time.time()
            print('%s %s (%.0f s)' % (name, onnx_for(torch, dy, name, args.size, args.seed,
                                                    args.onnx_dir, args.onnx_dir or '.'),
                                      time.time() - t0), flush=True)
        return 0
    if not torch.cuda.is_available():
        log('gpu_peers: no CUDA device (use --cpu-smoke to exercise the script)')
        return 1
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import damoyolo as dy
    models = [m for m in args.models.split(',') if m]
    batches = [int(b) for b in args.batches.split(',') if b]
    log('gpu_peers: %s, torch %s, models %s, batches %s, %dx%d, median of %d after %d, impls %s'
        % (torch.cuda.get_device_name(), torch.__version__, models, batches, args.size,
           args.size, args.iters, args.warmup, ','.join(sorted(args.impls))))
    cells = Cells(args.save)
    with tempfile.TemporaryDirectory(prefix='gpu_peers_') as tmp:
        for name in models:
            # batchdet first: its device-memory figure needs the GPU to itself
            ours_cells(torch, dy, name, batches, args, cells, tmp, 'cuda')
            torch_cells(torch, dy, name, batches, args, cells, 'cuda')
            ort_cells(torch, dy, name, batches, args, cells, tmp)
            compile_cells(torch, dy, name, batches, args, cells, 'cuda')
    print_table(cells, 'gpu_peers (%s, torch %s, %dx%d, median of %d)'
                % (torch.cuda.get_device_name(), torch.__version__, args.size, args.size,
                   args.iters))
    print_targets(cells)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
