#!/usr/bin/python3
"""Stand-in for the batchdet binary, used only to self-test parity.py's plumbing while
(or where) `batchdet infer` / `detect --dump-input` do not exist:
  standin.py infer --model M --input X.f32 --out PREFIX       -> tests/node/ort_run.js
  standin.py detect --model M --dump-input DIR IMAGE...       (YOLOX only)
detect decodes with djpeg (JPEG) or ImageMagick convert (PNG), letterboxes with a plain
numpy bilinear resize, runs ort_run.js and yolox_post.js. Not a reference: parity.py
compares it with the same tools, so a pass only proves the scripts work end to end."""
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = os.path.join(HERE, '..', 'node')


def read_pnm(data):
    parts, pos = [], 0
    while len(parts) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b'#':
            pos = data.index(b'\n', pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        parts.append(data[pos:end])
        pos = end
    pos += 1
    magic, w, h = parts[0], int(parts[1]), int(parts[2])
    c = 3 if magic == b'P6' else 1
    img = np.frombuffer(data[pos:pos + w * h * c], np.uint8).reshape(h, w, c)
    return np.repeat(img, 3, 2) if c == 1 else img


def decode(path):
    with open(path, 'rb') as f:
        head = f.read(4)
    if head[:2] == b'\xff\xd8':
        out = subprocess.run(['djpeg', '-pnm', path], stdout=subprocess.PIPE, check=True).stdout
    else:
        out = subprocess.run(['convert', path, 'ppm:-'], stdout=subprocess.PIPE,
                             check=True).stdout
    return read_pnm(out)


def resize_bilinear(img, nw, nh):
    h, w = img.shape[:2]
    ys = np.clip((np.arange(nh) + 0.5) * h / nh - 0.5, 0, h - 1)
    xs = np.clip((np.arange(nw) + 0.5) * w / nw - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - fx) + f[y0][:, x1] * fx
    bot = f[y1][:, x0] * (1 - fx) + f[y1][:, x1] * fx
    return np.round(top * (1 - fy) + bot * fy).astype(np.uint8)


def detect(argv):
    model, dump, images, i = None, None, [], 0
    while i < len(argv):
        if argv[i] == '--model':
            model, i = argv[i + 1], i + 2
        elif argv[i] == '--dump-input':
            dump, i = argv[i + 1], i + 2
        else:
            images.append(argv[i])
            i += 1
    size = 416
    for p in images:
        base = os.path.basename(p)
        img = decode(p)
        h, w = img.shape[:2]
        r = min(size / h, size / w)
        canvas = np.full((size, size, 3), 114, np.uint8)
        canvas[:int(h * r), :int(w * r)] = resize_bilinear(img, int(w * r), int(h * r))
        x = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)   # BGR NCHW
        f32 = os.path.join(dump, base + '.f32')
        x.tofile(f32)
        meta = {'image': base, 'width': w, 'height': h, 'ratio': r, 'input_size': size,
                'family': 'yolox'}
        with open(os.path.join(dump, base + '.json'), 'w') as f:
            json.dump(meta, f)
        pre = os.path.join(dump, base + '.standin')
        subprocess.run(['node', os.path.join(NODE, 'ort_run.js'), model, f32, pre], check=True)
        out = subprocess.run(['node', os.path.join(NODE, 'yolox_post.js'), pre + '.0.f32',
                              os.path.join(dump, base + '.json')], stdout=subprocess.PIPE,
                             check=True).stdout
        sys.stdout.write(out.decode())
    return 0


def main(argv):
    if argv and argv[0] == 'infer':
        a = dict(zip(argv[1::2], argv[2::2]))
        return subprocess.run(['node', os.path.join(NODE, 'ort_run.js'), a['--model'],
                               a['--input'], a['--out']]).returncode
    if argv and argv[0] == 'detect':
        return detect(argv[1:])
    sys.stderr.write('standin: only infer and detect\n')
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
