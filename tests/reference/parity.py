#!/usr/bin/python3
"""Parity tests of the batchdet engine against independent references.

  parity.py damoyolo --model T --size 320 [--batch 1] [--form deploy|train]
      Export (cached) our PyTorch DAMO-YOLO with seeded weights, run the ONNX through
      `$BATCHDET infer` and through onnxruntime-node (tests/node/ort_run.js), and compare
      both with PyTorch's eager FP32 outputs: ||x-ref||/||ref|| <= 1e-4 for scores and
      boxes (outputs recognised by shape, not by name).
  parity.py damoyolo ... --opset N --dynamic
      The same with the export's opset changed and a symbolic batch (as `--dynamic`
      exporters write: Shape/Gather/Unsqueeze/Concat chains feed the head's Reshapes).
  parity.py damoyolo|yolox ... --half float16|float16-io32|bfloat16
      The model converted to 16-bit floats (halfmodel.py; -io32: float32 input and
      outputs with Casts, as converters write with keep_io_types) must run as its exact
      float32 widening (onnxruntime on that, at the same tolerance), near PyTorch's float32
      outputs and (float16) near onnxruntime on the float16 file, which computes in float16.
  parity.py yoloxref --model shipped|nano|tiny|s|m|l|x
      Our PyTorch YOLOX (yolox.py): with the shipped yolox_nano.onnx's weights it must give
      onnxruntime's outputs on that file (a check of the reference), and so must `infer`;
      other sizes: seeded weights, `infer` and onnxruntime vs PyTorch at 1e-4.
  parity.py yolox --export tiny|s|...
      The photo flow below on a seeded YOLOX of that size (calibrated on the photos)
      instead of the shipped model (detections must agree; no dog check).
  parity.py acts
      LeakyRelu, Clip (attribute and input forms), HardSigmoid, HardSwish behind a conv:
      `infer` vs onnxruntime at 1e-6 (the importer lowers them to Relu/Add/Sub/Mul).
  parity.py yoloxref ... --act lrelu   YOLOX with LeakyReLU(0.1) activations.
  parity.py yolox --export nano --classes 3
      The same for a custom class count (raw [1,A,5+C]; no labels without a names file).
  parity.py yolox --at HxW
      The flow below with the shipped weights re-exported by our reference at H x W (a
      non-square input: letterbox, grids and decode per axis).
  parity.py yolox
      YOLOX-nano on every photo of $BD_TEST_DATA/images: `$BATCHDET detect --dump-input`
      gives the pre-processed tensors and the detections; `$BATCHDET infer` vs
      onnxruntime on the identical tensor (rel <= 1e-4); our detections vs the
      independent JavaScript post-processing (tests/node/yolox_post.js) on onnxruntime's
      raw output; dog.jpg must show a dog, a bicycle and a car.

Environment (set by ctest): BATCHDET, BD_TEST_DATA, BD_BINARY_DIR, BD_SOURCE_DIR.
--batchdet CMD overrides $BATCHDET (self-tests use tests/reference/standin.py);
--perturb EPS adds relative noise to our outputs to show that the checks can fail.
Prints "N passed, N failed"; exit status 1 on any failure.
"""
import argparse
import glob
import json
import os
import shlex
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get('BD_SOURCE_DIR') or os.path.dirname(os.path.dirname(HERE))
NODE_DIR = os.path.join(SRC, 'tests', 'node')
REL_TOL = 1e-4
RUN_TIMEOUT = 300


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
            print('PASS', what)
        else:
            self.failed += 1
            print('FAIL', what)
        sys.stdout.flush()
        return ok

    def done(self):
        print('%d passed, %d failed' % (self.passed, self.failed))
        return 0 if self.failed == 0 and self.passed > 0 else 1


def run(cmd, what, timeout=RUN_TIMEOUT):
    """Runs cmd (list); returns (ok, stdout, message)."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except FileNotFoundError as e:
        return False, b'', '%s: cannot start %s (%s)' % (what, cmd[0], e)
    except subprocess.TimeoutExpired:
        return False, b'', '%s: timed out after %d s: %s' % (what, timeout, ' '.join(cmd))
    if p.returncode != 0:
        tail = p.stderr.decode('utf-8', 'replace').strip().splitlines()[-8:]
        return False, p.stdout, '%s: exit status %d: %s\n    %s' % (
            what, p.returncode, ' '.join(cmd), '\n    '.join(tail))
    return True, p.stdout, ''


def batchdet_cmd(args):
    cmd = args.batchdet or os.environ.get('BATCHDET')
    if not cmd:
        raise SystemExit('parity: BATCHDET is not set (path of the batchdet binary)')
    return shlex.split(cmd)


def read_outputs(prefix):
    """Reads PREFIX.json + PREFIX.<i>.f32 (the `batchdet infer` contract)."""
    with open(prefix + '.json') as f:
        desc = json.load(f)
    outs = []
    for i, o in enumerate(desc['outputs']):
        dims = [int(d) for d in o['dims']]
        a = np.fromfile('%s.%d.f32' % (prefix, i), dtype=np.float32)
        if a.size != int(np.prod(dims)):
            raise ValueError('%s.%d.f32 holds %d floats, json says dims %s'
                             % (prefix, i, a.size, dims))
        outs.append((o.get('name'), a.reshape(dims)))
    return outs


def by_shape(outs, shape):
    hits = [a for _, a in outs if list(a.shape) == list(shape)]
    return hits[0] if len(hits) == 1 else None


def compare(rep, what, ours, ref, perturb=0.0, tol=REL_TOL):
    if ours is None:
        return rep.check(False, '%s: no output of shape %s' % (what, list(ref.shape)))
    ours = ours.astype(np.float64)
    if perturb:
        rng = np.random.default_rng(1)
        ours = ours + perturb * np.linalg.norm(ref) / np.sqrt(ref.size) * \
            rng.standard_normal(ours.shape)
    ref = ref.astype(np.float64)
    if not np.all(np.isfinite(ours)):
        return rep.check(False, '%s: non-finite values' % what)
    rel = np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30)
    mx = np.abs(ours - ref).max()
    return rep.check(rel <= tol, '%s: rel %.3g (tol %.0e), max abs %.3g' % (what, rel, tol, mx))


def run_infer(rep, args, model, inp, prefix, label):
    """`batchdet infer` (or ort_run.js for the onnxruntime opinion); returns outputs."""
    if label == 'ort':
        cmd = ['node', os.path.join(NODE_DIR, 'ort_run.js'), model, inp, prefix]
    else:
        cmd = batchdet_cmd(args) + ['infer', '--model', model, '--input', inp, '--out', prefix]
    for f in glob.glob(prefix + '.*'):
        os.remove(f)
    ok, _, msg = run(cmd, label)
    if not ok:
        if label != 'ort' and ('cannot start' in msg or 'exit status 2' in msg):
            msg += '\n    (is `batchdet infer` implemented? it must write %s.<i>.f32 and %s.json)' \
                % (prefix, prefix)
        rep.check(False, msg)
        return None
    try:
        return read_outputs(prefix)
    except (OSError, ValueError, KeyError) as e:
        rep.check(False, '%s: unreadable outputs under %s: %s' % (label, prefix, e))
        return None


def work_dir(args, name):
    d = args.work or os.path.join(os.environ.get('BD_BINARY_DIR', '/tmp'), 'parity', name)
    os.makedirs(d, exist_ok=True)
    return d


def cache_root():
    d = os.path.join(os.environ.get('BD_BINARY_DIR', '/tmp'), 'parity', 'cache')
    os.makedirs(d, exist_ok=True)
    return d


# ------------------------------------------------------------------------------ damoyolo

def damoyolo_export(name, form, size, batch, seed, opset=11, dynamic=False, classes=80):
    """Cached export; the torch import (seconds) only happens when the cache misses."""
    key = 'damoyolo_%s_%s_%d_b%d_s%d' % (name, form, size, batch, seed)
    if opset != 11 or dynamic:
        key += '_op%d%s' % (opset, '_dyn' if dynamic else '')
    if classes != 80:
        key += '_c%d' % classes

    def make(tmp):
        import damoyolo
        damoyolo.export(name, form, size, batch, seed, tmp, opset=opset, dynamic=dynamic,
                        classes=classes)
    return cached_export('damoyolo.py', key, make)


def yolox_export(name, size, seed, obj_bias, images=(), classes=80, act='silu'):
    size = size or (416 if name in ('nano', 'tiny') else 640)   # the official input sizes
    key = 'yolox_%s_%d_s%d_o%g%s%s%s' % (name, size, seed, obj_bias, '_photos' if images else '',
                                          '_c%d' % classes if classes != 80 else '',
                                          '_' + act if act != 'silu' else '')

    def make(tmp):
        import yolox
        yolox.export(name, size, seed, tmp, obj_bias, classes, images=images, act=act)
    return cached_export('yolox.py', key, make)


def cached_export(source, key, make):
    """cache_root()/key, made by make(dir) unless it holds a meta.json from the current
    `source` (its sha1 is stored there)."""
    import hashlib
    with open(os.path.join(HERE, source), 'rb') as f:
        sha = hashlib.sha1(f.read()).hexdigest()
    d = os.path.join(cache_root(), key)

    def current():
        try:
            with open(os.path.join(d, 'meta.json')) as f:
                return json.load(f).get('source_sha1') == sha
        except (OSError, ValueError):
            return False

    if current():
        return d
    sys.path.insert(0, HERE)
    import shutil
    tmp = d + '.tmp%d' % os.getpid()
    make(tmp)
    with open(os.path.join(tmp, 'meta.json')) as f:
        meta = json.load(f)
    meta['source_sha1'] = sha
    with open(os.path.join(tmp, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    # A current export is never removed: a parallel test may be reading it (removing it
    # and renaming ours in left a window where its files were missing). A stale one (an
    # older source) is moved aside in one rename first.
    if not current() and os.path.isdir(d):
        old = d + '.old%d' % os.getpid()
        try:
            os.rename(d, old)
            shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    try:
        os.rename(tmp, d)
    except OSError:     # a parallel test exported the same key first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def cmd_damoyolo(args):
    rep = Report()
    size = args.size
    tag = '%s_%s_%d_b%d' % (args.model, args.form, size, args.batch)
    if args.opset != 11 or args.dynamic:
        tag += '_op%d%s' % (args.opset, '_dyn' if args.dynamic else '')
    if args.relabel:
        tag += '_as%d' % args.relabel
    if args.classes != 80:
        tag += '_c%d' % args.classes
    d = damoyolo_export(args.model, args.form, size, args.batch, args.seed, args.opset,
                        args.dynamic, args.classes)
    with open(os.path.join(d, 'meta.json')) as f:
        meta = json.load(f)
    B, A, C = meta['batch'], meta['A'], args.classes
    ref_s = np.fromfile(os.path.join(d, 'scores.f32'), np.float32).reshape(B, A, C)
    ref_b = np.fromfile(os.path.join(d, 'boxes.f32'), np.float32).reshape(B, A, 4)
    rep.check(A == 21 * (size // 32) ** 2, '%s: A = %d = 21*(S/32)^2, %.0f%% of reference '
              'scores unsaturated' % (tag, A, 100 * meta.get('scores_unsaturated', 0)))
    w = work_dir(args, 'damoyolo_' + tag + ('_' + args.half if args.half else ''))
    model, inp = os.path.join(d, 'model.onnx'), os.path.join(d, 'input.f32')
    if args.relabel:   # the same graph declared at a newer opset (whose ops are unchanged)
        import onnx
        m = onnx.load(model)
        for o in m.opset_import:
            if o.domain in ('', 'ai.onnx'):
                o.version = args.relabel
        m.ir_version = max(m.ir_version, 10)
        model = os.path.join(w, 'model_opset%d.onnx' % args.relabel)
        onnx.save(m, model)
    if args.half:
        return damoyolo_half(rep, args, tag, model, inp, w, ref_s, ref_b)
    runners = ['batchdet'] if args.no_ort else ['ort', 'batchdet']
    for label in runners:
        outs = run_infer(rep, args, model, inp, os.path.join(w, label), label)
        if outs is None:
            continue
        pert = args.perturb if label == 'batchdet' else 0.0
        compare(rep, '%s %s scores %s' % (tag, label, [B, A, C]),
                by_shape(outs, [B, A, C]), ref_s, pert)
        compare(rep, '%s %s boxes %s' % (tag, label, [B, A, 4]),
                by_shape(outs, [B, A, 4]), ref_b, pert)
    return rep.done()


# Relative error of a half model against the float32 PyTorch reference (weights rounded
# to 11 or 8 significant bits): loose, it only shows the model is the same model.
HALF_REF_TOL = {'float16': 5e-3, 'bfloat16': 2e-2}


def half_models(args, model, w):
    """The --half variant of `model` and its exact float32 widening (halfmodel.py)."""
    sys.path.insert(0, HERE)
    import halfmodel
    kind = 'bfloat16' if args.half == 'bfloat16' else 'float16'
    hm = os.path.join(w, 'model_%s.onnx' % args.half)
    wm = os.path.join(w, 'model_%s_widened.onnx' % args.half)
    halfmodel.to_half(model, hm, kind, keep_io=args.half == 'float16-io32')
    halfmodel.widen(hm, wm)
    return hm, wm


def damoyolo_half(rep, args, tag, model, inp, w, ref_s, ref_b):
    """A float16/bfloat16 model runs as the float32 model with its rounded weights: ours
    on the half file vs onnxruntime on the widened one at the usual tolerance; both close
    to PyTorch's float32 outputs; onnxruntime on the float16 file itself (it computes in
    float16) loosely."""
    hm, wm = half_models(args, model, w)
    B, A, C = ref_s.shape
    tag = '%s %s' % (tag, args.half)
    mine = run_infer(rep, args, hm, inp, os.path.join(w, 'batchdet'), 'batchdet')
    wide = run_infer(rep, args, wm, inp, os.path.join(w, 'ort_widened'), 'ort')
    if mine is None or wide is None:
        return rep.done()
    for name, shape, ref in (('scores', [B, A, C], ref_s), ('boxes', [B, A, 4], ref_b)):
        ours = by_shape(mine, shape)
        compare(rep, '%s batchdet vs onnxruntime on the widened model, %s' % (tag, name), ours,
                by_shape(wide, shape), args.perturb)
        compare(rep, '%s batchdet vs PyTorch float32, %s' % (tag, name), ours, ref,
                tol=HALF_REF_TOL[args.half.split('-')[0]])
    if args.half != 'bfloat16':   # onnxruntime's CPU provider has no bfloat16 convs
        theirs = run_infer(rep, args, hm, inp, os.path.join(w, 'ort_half'), 'ort')
        if theirs is not None:
            for name, shape in (('scores', [B, A, C]), ('boxes', [B, A, 4])):
                compare(rep, '%s batchdet vs onnxruntime on the float16 model, %s' % (tag, name),
                        by_shape(mine, shape), by_shape(theirs, shape), tol=HALF_REF_TOL['float16'])
    return rep.done()


# ------------------------------------------------------------------------------ yolox

def box_iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / uni if uni > 0 else 0.0


def match_detections(ours, theirs, iou_min=0.98, score_tol=1e-3, px_tol=0.02):
    """Each of ours matched to a distinct one of theirs: same class, IoU >= iou_min or
    every coordinate within px_tol (a box clipped to a line or a point has no IoU to
    speak of), |score diff| <= score_tol (best IoU first). Returns a list of problems."""
    probs = []
    if len(ours) != len(theirs):
        probs.append('count %d vs reference %d' % (len(ours), len(theirs)))
    used = set()
    for o in sorted(ours, key=lambda x: -x['score']):
        best, bi = -1.0, None
        for j, t in enumerate(theirs):
            if j in used or t['class'] != o['class'] or abs(t['score'] - o['score']) > score_tol:
                continue
            v = box_iou(o['box'], t['box'])
            if max(abs(p - q) for p, q in zip(o['box'], t['box'])) <= px_tol:
                v = 1.0
            if v > best:
                best, bi = v, j
        if bi is None or best < iou_min:
            probs.append('unmatched %s %.4f %s (best IoU %.3f)' % (
                o.get('label', o['class']), o['score'], [round(v, 1) for v in o['box']], best))
        else:
            used.add(bi)
    return probs


def check_letterbox(rep, name, x, meta, size):
    """Independent layout check of the dumped YOLOX tensor (input SH x SW): r = min(SH/h,
    SW/w), the resized image at the top-left, everything right/below int(w*r) x int(h*r)
    is exactly 114."""
    h, w = int(meta['height']), int(meta['width'])
    r = min(size[0] / h, size[1] / w)
    ok_r = abs(float(meta['ratio']) - r) <= 1e-6 * r
    rw, rh = int(w * r), int(h * r)
    pad = np.concatenate([x[:, :, rh:, :].ravel(), x[:, :, :rh, rw:].ravel()])
    ok_pad = pad.size == 0 or bool(np.all(pad == 114.0))
    ok_range = bool(np.all((x >= 0) & (x <= 255)))
    rep.check(ok_r and ok_pad and ok_range,
              '%s: dumped input letterbox (ratio %.6f vs %.6f, %d pad values all 114: %s, '
              'range 0..255: %s)' % (name, float(meta['ratio']), r, pad.size, ok_pad, ok_range))


def cmd_yoloxref(args):
    """Our PyTorch YOLOX (yolox.py). `--model shipped`: the reference with the shipped
    yolox_nano.onnx's weights must give onnxruntime's outputs on that file (this checks
    the reference itself), and so must `batchdet infer`. Other sizes: a seeded export,
    batchdet and onnxruntime vs the reference's eager FP32 output."""
    rep = Report()
    sys.path.insert(0, HERE)
    data = os.environ.get('BD_TEST_DATA') or os.path.join(SRC, '..', 'shared', 'data')
    if args.model == 'shipped':
        import torch
        import yolox
        w = work_dir(args, 'yoloxref_shipped')
        model = os.path.join(data, 'models', 'yolox_nano.onnx')
        net = yolox.YOLOX('nano').eval()
        try:
            yolox.load_onnx_weights(net, model, 416)
            rep.check(True, 'the shipped yolox_nano.onnx loads into the reference, Conv by Conv')
        except ValueError as e:
            rep.check(False, 'the shipped weights do not fit the reference: %s' % e)
            return rep.done()
        x = yolox.make_input(1, 416, args.seed)
        inp = os.path.join(w, 'input.f32')
        x.tofile(inp)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        tag = 'nano (shipped weights)'
    else:
        d = yolox_export(args.model, args.size or 0, args.seed, args.obj_bias, act=args.act)
        with open(os.path.join(d, 'meta.json')) as f:
            meta = json.load(f)
        w = work_dir(args, 'yoloxref_%s_%d_%s' % (args.model, meta['size'], args.act))
        model, inp = os.path.join(d, 'model.onnx'), os.path.join(d, 'input.f32')
        ref = np.fromfile(os.path.join(d, 'output.f32'), np.float32).reshape(meta['output_shape'])
        tag = '%s %d %s (seeded, %d params)' % (args.model, meta['size'], args.act, meta['params'])
    for label in ('ort', 'batchdet'):
        outs = run_infer(rep, args, model, inp, os.path.join(w, label), label)
        if outs is not None:
            compare(rep, '%s: %s vs PyTorch %s' % (tag, label, list(ref.shape)),
                    by_shape(outs, list(ref.shape)), ref,
                    args.perturb if label == 'batchdet' else 0.0)
    return rep.done()


def cmd_yolox(args):
    rep = Report()
    data = os.environ.get('BD_TEST_DATA') or os.path.join(SRC, '..', 'shared', 'data')
    model = args.model_path or os.path.join(data, 'models', 'yolox_nano.onnx')
    shipped = not args.model_path and not args.export
    images = sorted(p for p in glob.glob(os.path.join(data, 'images', '*'))
                    if os.path.isfile(p))
    if args.export:   # a seeded YOLOX of another size, calibrated on these photos
        model = os.path.join(yolox_export(args.export, 0, args.seed, args.obj_bias, images,
                                          args.classes), 'model.onnx')
    elif args.classes != 80:
        raise SystemExit('parity: --classes needs --export')
    if args.at:   # the shipped weights through our reference, exported at H x W
        import torch
        sys.path.insert(0, HERE)
        import yolox
        h, wd = (int(v) for v in args.at.lower().split('x'))
        net = yolox.YOLOX('nano').eval()
        yolox.load_onnx_weights(net, model, 416)
        model = os.path.join(work_dir(args, 'yolox_at_%dx%d' % (h, wd)), 'model.onnx')
        yolox.export_onnx(net, torch.zeros(1, 3, h, wd), model)
    names = [l for l in open(os.path.join(data, 'coco.names')).read().split('\n') if l]
    w = work_dir(args, 'yolox' + ('_' + args.export if args.export else '') +
                 ('_c%d' % args.classes if args.classes != 80 else '') +
                 ('_at_' + args.at if args.at else '') +
                 ('_' + args.half if args.half else ''))
    # --half: we run the half model; the references run its exact float32 widening
    ref_model = model
    if args.half:
        model, ref_model = half_models(args, model, w)
    dump = os.path.join(w, 'dump')
    os.makedirs(dump, exist_ok=True)
    for f in glob.glob(os.path.join(dump, '*')):
        os.remove(f)
    ok, out, msg = run(batchdet_cmd(args) + ['detect', '--model', model, '--dump-input', dump]
                       + images, 'batchdet detect')
    if not rep.check(ok, 'batchdet detect --dump-input on %d images' % len(images) +
                     ('' if ok else '\n    ' + msg)):
        return rep.done()
    ours = {}
    for line in out.decode('utf-8', 'replace').splitlines():
        line = line.strip()
        if line.startswith('{'):
            j = json.loads(line)
            ours[os.path.basename(j.get('image', ''))] = j
    for img in images:
        base = os.path.basename(img)
        o = ours.get(base)
        if not rep.check(o is not None and 'detections' in o,
                         '%s: detect printed a detections line' % base):
            continue
        C = args.classes
        rep.check(o.get('width') and o.get('height') and all(
            d.get('label') == (names[d['class']] if C == 80 else None) for d in o['detections']),
            '%s: width/height present, labels %s' % (
                base, 'match coco.names' if C == 80 else 'absent (%d classes, no names)' % C))
        f32 = os.path.join(dump, base + '.f32')
        mj = os.path.join(dump, base + '.json')
        if not os.path.exists(f32):   # tolerate <stem>.f32 when the stem is unique
            stem = os.path.splitext(base)[0]
            if sum(os.path.splitext(os.path.basename(p))[0] == stem for p in images) == 1:
                f32, mj = os.path.join(dump, stem + '.f32'), os.path.join(dump, stem + '.json')
        if not rep.check(os.path.exists(f32) and os.path.exists(mj),
                         '%s: dump files %s and .json exist' % (base, f32)):
            continue
        meta = json.load(open(mj))
        size = meta.get('input_size', 416)   # N, or [H, W] for a non-square input
        size = tuple(int(v) for v in size) if isinstance(size, list) else (int(size),) * 2
        x = np.fromfile(f32, np.float32)
        if not rep.check(x.size == 3 * size[0] * size[1], '%s: dump holds [1,3,%d,%d] floats'
                         % (base, size[0], size[1])):
            continue
        check_letterbox(rep, base, x.reshape(1, 3, *size), meta, size)
        ort = run_infer(rep, args, ref_model, f32, os.path.join(w, base + '.ort'), 'ort')
        mine = run_infer(rep, args, model, f32, os.path.join(w, base + '.ours'), 'batchdet')
        A = sum((size[0] // s) * (size[1] // s) for s in (8, 16, 32))
        ort_raw = by_shape(ort, [1, A, 5 + C]) if ort else None
        if mine is not None and ort_raw is not None:
            compare(rep, '%s: infer vs onnxruntime raw [1,%d,%d]%s' % (
                base, A, 5 + C, ' (%s model vs its float32 widening)' % args.half if args.half else ''),
                by_shape(mine, [1, A, 5 + C]), ort_raw, args.perturb)
            if args.half == 'float16' and base == 'dog.jpg':
                half = run_infer(rep, args, model, f32, os.path.join(w, base + '.ort16'), 'ort')
                if half is not None:
                    compare(rep, '%s: infer vs onnxruntime on the float16 model' % base,
                            by_shape(mine, [1, A, 85]), by_shape(half, [1, A, 85]),
                            tol=HALF_REF_TOL['float16'])
        if ort_raw is None:
            rep.check(False, '%s: onnxruntime gave no [1,%d,%d] output' % (base, A, 5 + C))
            continue
        ok, pout, msg = run(['node', os.path.join(NODE_DIR, 'yolox_post.js'),
                             os.path.join(w, base + '.ort.0.f32'), mj,
                             '--names', os.path.join(data, 'coco.names')], 'yolox_post.js')
        if not rep.check(ok, '%s: reference post-processing ran%s' % (base, '' if ok else
                                                                        '\n    ' + msg)):
            continue
        ref = json.loads(pout.decode())['detections']
        dets = o['detections']
        if args.perturb:
            dets = [dict(d, score=d['score'] + args.perturb * 30) for d in dets]
        probs = match_detections(dets, ref)
        rep.check(not probs, '%s: %d detections match the reference (%d)%s' % (
            base, len(dets), len(ref), ''.join('\n    ' + p for p in probs)))
        if base == 'dog.jpg' and shipped:
            classes = {d['class'] for d in dets}
            rep.check({16, 1, 2} <= classes,
                      'dog.jpg shows dog(16), bicycle(1), car(2): got %s' % sorted(classes))
    return rep.done()


def act_models(d):
    """Small models with the activations batchdet lowers (LeakyRelu, Clip, HardSigmoid,
    HardSwish) in each attribute/input form, behind a conv so that values span both
    sides of every bound. Returns [(name, path)]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), 'w')
    cases = [
        ('lrelu_0.1', 11, 'LeakyRelu', {'alpha': 0.1}, []),
        ('lrelu_default', 11, 'LeakyRelu', {}, []),
        ('lrelu_0', 11, 'LeakyRelu', {'alpha': 0.0}, []),
        ('clip6_op6', 6, 'Clip', {'min': 0.0, 'max': 6.0}, []),
        ('clip_op6_max_only', 6, 'Clip', {'max': 2.5}, []),
        ('clip6_op11', 11, 'Clip', {}, [0.0, 6.0]),
        ('clip_op11_lo', 11, 'Clip', {}, [-1.5, None]),
        ('clip_op11_hi', 13, 'Clip', {}, [None, 2.5]),
        ('clip_op11_none', 11, 'Clip', {}, []),
        ('hsigmoid_default', 11, 'HardSigmoid', {}, []),
        ('hsigmoid_custom', 11, 'HardSigmoid', {'alpha': 0.3, 'beta': 0.4}, []),
        ('hswish', 14, 'HardSwish', {}, []),
    ]
    out = []
    for name, opset, op, attrs, bounds in cases:
        inits, ins = [w], ['c']
        for k, b in enumerate(bounds):
            if b is None:
                ins.append('')
            else:
                inits.append(numpy_helper.from_array(np.array(b, np.float32), 'b%d' % k))
                ins.append('b%d' % k)
        nodes = [helper.make_node('Conv', ['x', 'w'], ['c'], pads=[1, 1, 1, 1]),
                 helper.make_node(op, ins, ['y'], **attrs)]
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(
            'x', TensorProto.FLOAT, ['N', 3, 16, 16])], [helper.make_tensor_value_info(
                'y', TensorProto.FLOAT, None)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid('', opset)])
        m.ir_version = 7
        path = os.path.join(d, name + '.onnx')
        onnx.save(m, path)
        out.append((name, path))
    return out


def cmd_acts(args):
    """Each lowered activation: `batchdet infer` vs onnxruntime, inputs spanning +-30."""
    rep = Report()
    w = work_dir(args, 'acts')
    inp = os.path.join(w, 'input.f32')
    x = np.random.default_rng(6).uniform(-3, 3, (2, 3, 16, 16)).astype(np.float32)
    x.tofile(inp)
    for name, path in act_models(w):
        ort = run_infer(rep, args, path, inp, os.path.join(w, name + '.ort'), 'ort')
        mine = run_infer(rep, args, path, inp, os.path.join(w, name + '.ours'), 'batchdet')
        if ort is None or mine is None:
            continue
        ref = ort[0][1]
        compare(rep, '%s: infer vs onnxruntime %s (range %.1f..%.1f)' % (
            name, list(ref.shape), ref.min(), ref.max()), mine[0][1], ref, args.perturb, tol=1e-6)
    return rep.done()


def cmd_selftest(args):
    """The checks themselves must be able to fail: with the stand-in runner the T parity
    passes, with 1e-3 noise it fails; the detection matcher rejects class, box and score
    differences and count mismatches."""
    rep = Report()
    me = [sys.executable, os.path.abspath(__file__), '--batchdet',
          '%s %s' % (sys.executable, os.path.join(HERE, 'standin.py'))]
    for extra, want in (([], 0), (['--perturb', '1e-3'], 1)):
        p = subprocess.run(me + extra + ['damoyolo', '--model', 'T', '--size', '320',
                                         '--no-ort'], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        tail = p.stdout.decode('utf-8', 'replace').strip().splitlines()[-1:]
        rep.check(p.returncode == want, 'stand-in run %s exits %d (want %d): %s'
                  % (extra or 'clean', p.returncode, want, tail))
    a = {'class': 16, 'score': 0.9, 'box': [10.0, 10.0, 110.0, 210.0]}
    b = {'class': 1, 'score': 0.5, 'box': [0.0, 0.0, 50.0, 50.0]}
    rep.check(not match_detections([a, b], [b, a]), 'matcher: same set in another order')
    rep.check(bool(match_detections([a], [dict(a, **{'class': 2})])), 'matcher: class differs')
    rep.check(bool(match_detections([a], [dict(a, box=[10.0, 10.0, 110.0, 200.0])])),
              'matcher: IoU 0.95 rejected')
    rep.check(bool(match_detections([a], [dict(a, score=0.902)])), 'matcher: score +2e-3')
    rep.check(bool(match_detections([a, b], [a])), 'matcher: count differs')
    rep.check(bool(match_detections([a, a], [a, b])), 'matcher: one-to-one')
    line = {'class': 3, 'score': 0.7, 'box': [0.0, 10.0, 0.0, 90.0]}   # clipped to a line
    rep.check(not match_detections([line], [dict(line, box=[0.0, 10.01, 0.0, 90.0])]),
              'matcher: a zero-width box within 0.02 px')
    rep.check(bool(match_detections([line], [dict(line, box=[0.0, 10.1, 0.0, 90.0])])),
              'matcher: a zero-width box 0.1 px off rejected')
    return rep.done()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batchdet', help='command replacing $BATCHDET (self-tests)')
    ap.add_argument('--work', help='work folder (default $BD_BINARY_DIR/parity/<test>)')
    ap.add_argument('--perturb', type=float, default=0.0,
                    help='add this much relative noise to our outputs (must then fail)')
    sub = ap.add_subparsers(dest='cmd', required=True)
    d = sub.add_parser('damoyolo')
    d.add_argument('--model', required=True)
    d.add_argument('--size', type=int, required=True)
    d.add_argument('--batch', type=int, default=1)
    d.add_argument('--form', default='deploy', choices=['deploy', 'train'])
    d.add_argument('--seed', type=int, default=0)
    d.add_argument('--no-ort', action='store_true', help='skip the onnxruntime opinion')
    d.add_argument('--opset', type=int, default=11, help='export opset (default 11, official)')
    d.add_argument('--dynamic', action='store_true', help='export with a symbolic batch')
    d.add_argument('--classes', type=int, default=80, help='a custom class count')
    d.add_argument('--relabel', type=int, metavar='N',
                   help='declare the export at opset N (22..24: our ops unchanged since 17)')
    halves = ['float16', 'float16-io32', 'bfloat16']
    d.add_argument('--half', choices=halves,
                   help='convert the model (halfmodel.py) and check it runs as its widening')
    y = sub.add_parser('yolox')
    y.add_argument('--model-path', help='default $BD_TEST_DATA/models/yolox_nano.onnx')
    y.add_argument('--half', choices=halves, help='as for damoyolo')
    y.add_argument('--export', choices=['tiny', 's', 'm', 'l', 'x', 'nano'],
                   help='a seeded export of yolox.py instead of the shipped model')
    y.add_argument('--seed', type=int, default=0)
    y.add_argument('--classes', type=int, default=80, help='with --export: a custom class count')
    y.add_argument('--at', metavar='HxW',
                   help='the shipped weights re-exported at this input size (non-square)')
    y.add_argument('--obj-bias', type=float, default=-2.0,
                   help='added to the seeded objectness biases (sparser detections)')
    r = sub.add_parser('yoloxref')
    r.add_argument('--model', required=True,
                   choices=['shipped', 'nano', 'tiny', 's', 'm', 'l', 'x'])
    r.add_argument('--size', type=int, help="default: the model's official input size")
    r.add_argument('--seed', type=int, default=0)
    r.add_argument('--obj-bias', type=float, default=-2.0)
    r.add_argument('--act', default='silu', choices=['silu', 'relu', 'lrelu'],
                   help="YOLOX's act (lrelu: LeakyReLU(0.1), which batchdet lowers)")
    sub.add_parser('acts')
    sub.add_parser('selftest')
    a = ap.parse_args(argv)
    return {'damoyolo': cmd_damoyolo, 'yolox': cmd_yolox, 'yoloxref': cmd_yoloxref,
            'acts': cmd_acts, 'selftest': cmd_selftest}[a.cmd](a)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
