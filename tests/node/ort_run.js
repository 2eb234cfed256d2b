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

async function main() {
  const [model, input, prefix] = process.argv.slice(2);
  if (!model || !input || !prefix) fail('usage: ort_run.js MODEL.onnx INPUT.f32 OUTPREFIX');
  const opts = { graphOptimizationLevel: 'all', intraOpNumThreads: 2, interOpNumThreads: 1 };
  const sess = await ort.InferenceSession.create(model, opts);
  if (sess.inputNames.length !== 1) fail('model has ' + sess.inputNames.length + ' inputs, want 1');
  const meta = sess.inputMetadata[0];
  const dims = meta.shape.map(Number);
  if (dims.some((d) => !Number.isInteger(d) || d <= 0)) fail('input shape not static: ' + JSON.stringify(meta.shape));
  const count = dims.reduce((a, b) => a * b, 1);
  const buf = fs.readFileSync(input);
  if (buf.length !== count * 4) fail(`${input}: ${buf.length} bytes, model wants ${count * 4} (${dims})`);
  // Copy into an aligned Float32Array (Buffer offsets need not be 4-aligned).
  const data = new Float32Array(count);
  new Uint8Array(data.buffer).set(buf);
  const feeds = {};
  feeds[sess.inputNames[0]] = new ort.Tensor('float32', data, dims);
  const res = await sess.run(feeds);
  const outs = [];
  sess.outputNames.forEach((name, i) => {
    const t = res[name];
    if (t.type !== 'float32') fail(`output ${name} has type ${t.type}`);
    const d = t.data;
    fs.writeFileSync(`${prefix}.${i}.f32`, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
    outs.push({ name, dims: t.dims.map(Number) });
  });
  fs.writeFileSync(`${prefix}.json`, JSON.stringify({ outputs: outs }) + '\n');
}

main().catch((e) => fail(String(e && e.message ? e.message : e)));
