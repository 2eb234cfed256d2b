#!/usr/bin/env node
// Second opinion on an ONNX file: run it with onnxruntime-node (CPU EP) and write the raw
// outputs with the same file contract as `batchdet infer`:
//   node ort_run.js MODEL.onnx INPUT.f32 OUTPREFIX
// reads INPUT.f32 (float32 NCHW, shape taken from the model's single input), writes
// OUTPREFIX.<i>.f32 (float32, graph output order) and OUTPREFIX.json
// ({"outputs":[{"name":..., "dims":[...]}]}). Exit 0 on success, 1 with a message otherwise.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

function fail(msg) {
  process.stderr.write('ort_run: ' + msg + '\n');
  process.exit(1);
}

// float32 -> IEEE binary16 bits, round to nearest even (through a float64 scale: exact
// for every float32); NaN stays NaN, overflow goes to infinity.
function toHalf(f32) {
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < f32.length; i++) {
    const v = f32[i];
    const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
    const a = Math.abs(v);
    let h;
    if (Number.isNaN(v)) h = 0x7e00;
    else if (a >= 65520) h = 0x7c00; // rounds past 65504
    else if (a < 2 ** -14) h = roundEven(a * 2 ** 24); // subnormal (may round up to 0x400)
    else {
      let e = Math.floor(Math.log2(a));
      if (2 ** e > a) e--; // log2 rounding near powers of two
      if (2 ** (e + 1) <= a) e++;
      const m = roundEven((a / 2 ** e - 1) * 1024); // 0..1024; 1024 carries into e
      h = ((e + 15) << 10) + m;
    }
    out[i] = sign | h;
  }
  return out;
}

function roundEven(x) {
  const f = Math.floor(x);
  const r = x - f;
  return r > 0.5 || (r === 0.5 && f % 2 === 1) ? f + 1 : f;
}

function fromHalf(h16) {
  const out = new Float32Array(h16.length);
  for (let i = 0; i < h16.length; i++) {
    const h = h16[i];
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    const mag = e === 0x1f ? (m ? NaN : Infinity) : e ? (1 + m / 1024) * 2 ** (e - 15) : m * 2 ** -24;
    out[i] = h & 0x8000 ? -mag : mag;
  }
  return out;
}

async function main() {
  const [model, input, prefix] = process.argv.slice(2);
  if (!model || !input || !prefix) fail('usage: ort_run.js MODEL.onnx INPUT.f32 OUTPREFIX');
  const opts = { graphOptimizationLevel: 'all', intraOpNumThreads: 2, interOpNumThreads: 1 };
  const sess = await ort.InferenceSession.create(model, opts);
  if (sess.inputNames.length !== 1) fail('model has ' + sess.inputNames.length + ' inputs, want 1');
  const meta = sess.inputMetadata[0];
  const dims = meta.shape.map(Number);
  const buf = fs.readFileSync(input);
  // a symbolic batch (dynamic export) is the file's length over one image, as for batchdet
  if (meta.shape.length > 1 && !(dims[0] > 0)) {
    const one = dims.slice(1).reduce((a, b) => a * b, 1);
    if (one > 0 && buf.length % (one * 4) === 0 && buf.length > 0) dims[0] = buf.length / (one * 4);
  }
  if (dims.some((d) => !Number.isInteger(d) || d <= 0)) fail('input shape not static: ' + JSON.stringify(meta.shape));
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== count * 4) fail(`${input}: ${buf.length} bytes, model wants ${count * 4} (${dims})`);
  // Copy into an aligned Float32Array (Buffer offsets need not be 4-aligned).
  const data = new Float32Array(count);
  new Uint8Array(data.buffer).set(buf);
  const feeds = {};
  // A float16 model (tests/reference/halfmodel.py) takes and gives float16: converted here.
  feeds[sess.inputNames[0]] = meta.type === 'float16'
    ? new ort.Tensor('float16', toHalf(data), dims)
    : new ort.Tensor('float32', data, dims);
  const res = await sess.run(feeds);
  const outs = [];
  sess.outputNames.forEach((name, i) => {
    const t = res[name];
    if (t.type !== 'float32' && t.type !== 'float16') fail(`output ${name} has type ${t.type}`);
    const d = t.type === 'float16' ? fromHalf(t.data) : t.data;
    fs.writeFileSync(`${prefix}.${i}.f32`, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
    outs.push({ name, dims: t.dims.map(Number) });
  });
  fs.writeFileSync(`${prefix}.json`, JSON.stringify({ outputs: outs }) + '\n');
}

main().catch((e) => fail(String(e && e.message ? e.message : e)));
