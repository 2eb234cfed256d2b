#!/usr/bin/env node
// Independent YOLOX post-processing (reference for `batchdet detect` on yolox models):
//   node yolox_post.js RAW.f32 META.json [--score 0.3] [--iou 0.45] [--max-det 100]
//                      [--names coco.names]
// RAW.f32: the raw network output [1, A, 5+C] float32 (e.g. from ort_run.js);
// META.json: {"image", "width", "height", "ratio", "input_size" (N or [H, W])} as written by
// `batchdet detect --dump-input`. Prints one JSON line shaped like detect's output:
// {"image":..., "width":W, "height":H, "detections":[{"class","label","score","box"}]}.
//
// Semantics = YOLOX's own `postprocess` (yolox/utils/boxes.py), which is what the
// engine documents in gpu/bd_family.h:
//  - grid decode per stride s in 8, 16, 32 (grids of input/s, row-major gy then gx):
//    cx = (x + gx) * s, cy = (y + gy) * s, w = exp(w) * s, h = exp(h) * s;
//  - ONE label per anchor: the best class (first index on ties); score = obj * cls;
//    kept when score >= score_thr (YOLOX uses >=; the ONNX demo's multiclass_nms uses >,
//    which only differs for scores exactly equal to the threshold);
//  - per-class greedy NMS (torchvision batched_nms): descending score, ties by ascending
//    anchor index, drop when IoU with a kept box of the same class is > iou_thr, IoU on
//    continuous coordinates (no +1);
//  - keep the best max_det; boxes / ratio, then clipped to [0, width] x [0, height].
'use strict';
const fs = require('fs');
const path = require('path');

function fail(msg) {
  process.stderr.write('yolox_post: ' + msg + '\n');
  process.exit(1);
}

function parseArgs(argv) {
  const a = { score: 0.3, iou: 0.45, maxDet: 100, names: null, pos: [] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) fail('missing value for ' + k);
      return argv[++i];
    };
    if (k === '--score') a.score = Number(next());
    else if (k === '--iou') a.iou = Number(next());
    else if (k === '--max-det') a.maxDet = Number(next());
    else if (k === '--names') a.names = next();
    else a.pos.push(k);
  }
  if (a.pos.length !== 2) fail('usage: yolox_post.js RAW.f32 META.json [--score F] [--iou F] [--max-det N] [--names FILE]');
  return a;
}

function iou(a, b) {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  const inter = Math.max(0, iw) * Math.max(0, ih);
  const uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return uni > 0 ? inter / uni : 0;
}

// [inH, inW]: a grid of inH/s rows and inW/s columns per stride s.
function postprocess(raw, [inH, inW], numCls, opt) {
  const stride = 5 + numCls;
  const cands = [];
  let anchor = 0;
  for (const s of [8, 16, 32]) {
    for (let gy = 0; gy < Math.floor(inH / s); gy++) {
      for (let gx = 0; gx < Math.floor(inW / s); gx++, anchor++) {
        const o = anchor * stride;
        let best = 0;
        for (let c = 1; c < numCls; c++) if (raw[o + 5 + c] > raw[o + 5 + best]) best = c;
        const score = raw[o + 4] * raw[o + 5 + best];
        if (!(score >= opt.score)) continue;
        const cx = (raw[o] + gx) * s, cy = (raw[o + 1] + gy) * s;
        const w = Math.exp(raw[o + 2]) * s, h = Math.exp(raw[o + 3]) * s;
        cands.push({ idx: anchor, cls: best, score, box: [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] });
      }
    }
  }
  const total = anchors(inH, inW);
  if (anchor !== total || raw.length !== total * stride) fail(`raw output has ${raw.length} values, want ${total}x${stride}`);
  cands.sort((p, q) => q.score - p.score || p.idx - q.idx);
  const kept = [];
  for (const c of cands) {
    if (kept.length >= opt.maxDet) break;
    if (kept.some((k) => k.cls === c.cls && iou(k.box, c.box) > opt.iou)) continue;
    kept.push(c);
  }
  return kept;
}

function anchors(h, w) {
  return [8, 16, 32].reduce((n, s) => n + (h / s) * (w / s), 0);
}

function main() {
  const opt = parseArgs(process.argv.slice(2));
  const [rawPath, metaPath] = opt.pos;
  const meta = JSON.parse(fs.readFileSync(metaPath, 'utf8'));
  // input_size: N (square) or [H, W]
  const hw = Array.isArray(meta.input_size) ? meta.input_size.map(Number) : [Number(meta.input_size), Number(meta.input_size)];
  if (hw.length !== 2 || !hw.every((v) => v > 0 && v % 32 === 0)) fail('bad input_size in ' + metaPath);
  const buf = fs.readFileSync(rawPath);
  const raw = new Float32Array(buf.length / 4);
  new Uint8Array(raw.buffer).set(buf);
  const A = anchors(hw[0], hw[1]);
  const numCls = raw.length / A - 5;
  if (!Number.isInteger(numCls) || numCls < 1) fail(`${rawPath}: ${raw.length} floats is not ${A} x (5+C)`);
  const namesPath = opt.names || path.join(process.env.BD_TEST_DATA || path.join(__dirname, '../../../shared/data'), 'coco.names');
  const names = fs.readFileSync(namesPath, 'utf8').split('\n').filter((l) => l.length > 0);
  const r = Number(meta.ratio), W = Number(meta.width), H = Number(meta.height);
  const clip = (v, hi) => Math.min(Math.max(v, 0), hi);
  const dets = postprocess(raw, hw, numCls, opt).map((d) => ({
    class: d.cls,
    label: names[d.cls] || String(d.cls),
    score: d.score,
    box: [clip(d.box[0] / r, W), clip(d.box[1] / r, H), clip(d.box[2] / r, W), clip(d.box[3] / r, H)],
  }));
  process.stdout.write(JSON.stringify({ image: meta.image, width: W, height: H, detections: dets }) + '\n');
}

main();
