#!/usr/bin/python3
"""Independent PyTorch re-implementation of YOLOX (nano, tiny, s, m, l, x), deploy form.

Written from YOLOX's published architecture (CSPDarknet with a Focus stem, PAFPN,
decoupled head; Megvii's "YOLOX: Exceeding YOLO Series in 2021"), not from upstream
code. Each BaseConv is one Conv2d with a bias (BatchNorm folded, as an eval-mode export
folds it) followed by SiLU written as x * sigmoid(x). The head gives, per level,
[reg(4), sigmoid(obj), sigmoid(cls)] flattened and concatenated into [B, A, 5 + classes]
(YOLOX's decode_in_inference off: the official ONNX export).

The reference checks itself against the one real YOLOX file we have: `load_onnx_weights`
puts the shipped yolox_nano.onnx's weights into `build('nano')` (Conv nodes in graph
order = convs in execution order, every shape must match), and then its eager outputs
must equal onnxruntime's on that file (parity.py yoloxref). The other sizes get seeded
random weights, calibrated so that every conv output has std 1 on 0..255 noise and on
any photos given.

CLI:
  yolox.py export --model s --size 640 --seed 0 --out DIR [--obj-bias B] [--calibrate IMG...]
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

# name: (depth multiplier, width multiplier, depthwise, input size of the official release)
SIZES = {
    'nano': (0.33, 0.25, True, 416),
    'tiny': (0.33, 0.375, False, 416),
    's': (0.33, 0.50, False, 640),
    'm': (0.67, 0.75, False, 640),
    'l': (1.0, 1.0, False, 640),
    'x': (1.33, 1.25, False, 640),
}


class SiLU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


ACT = {'silu': SiLU, 'relu': nn.ReLU, 'lrelu': lambda: nn.LeakyReLU(0.1)}


class BaseConv(nn.Module):
    """Conv (pad (k-1)/2, bias: BN folded) -> activation (SiLU; YOLOX's act="relu" or
    "lrelu": LeakyReLU(0.1))."""

    def __init__(self, cin, cout, k, s=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=True)
        self.act = SiLU()   # YOLOX(act=...) replaces it

    def forward(self, x):
        return self.act(self.conv(x))


class DWConv(nn.Module):
    """Depthwise k x k then pointwise, both BaseConv."""

    def __init__(self, cin, cout, k, s=1):
        super().__init__()
        self.dconv = BaseConv(cin, cin, k, s, groups=cin)
        self.pconv = BaseConv(cin, cout, 1, 1)

    def forward(self, x):
        return self.pconv(self.dconv(x))


def conv_kind(depthwise):
    return DWConv if depthwise else BaseConv


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, shortcut, expansion, depthwise):
        super().__init__()
        hidden = int(cout * expansion)
        self.conv1 = BaseConv(cin, hidden, 1, 1)
        self.conv2 = conv_kind(depthwise)(hidden, cout, 3, 1)
        self.use_add = shortcut and cin == cout

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    def __init__(self, cin, cout, n, shortcut=True, depthwise=False):
        super().__init__()
        hidden = int(cout * 0.5)
        self.conv1 = BaseConv(cin, hidden, 1, 1)
        self.conv2 = BaseConv(cin, hidden, 1, 1)
        self.conv3 = BaseConv(2 * hidden, cout, 1, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise)
                                 for _ in range(n)])

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(x)   # before m: the order a trace of YOLOX records
        return self.conv3(torch.cat([self.m(x1), x2], 1))


class SPPBottleneck(nn.Module):
    def __init__(self, cin, cout, ks=(5, 9, 13)):
        super().__init__()
        hidden = cin // 2
        self.conv1 = BaseConv(cin, hidden, 1, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in ks])
        self.conv2 = BaseConv(hidden * (len(ks) + 1), cout, 1, 1)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [m(x) for m in self.m], 1))


class Focus(nn.Module):
    """Space-to-depth (top-left, bottom-left, top-right, bottom-right) then a conv."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = BaseConv(cin * 4, cout, k, 1)

    def forward(self, x):
        tl = x[..., ::2, ::2]
        tr = x[..., ::2, 1::2]
        bl = x[..., 1::2, ::2]
        br = x[..., 1::2, 1::2]
        return self.conv(torch.cat((tl, bl, tr, br), 1))


class CSPDarknet(nn.Module):
    def __init__(self, dep, wid, depthwise):
        super().__init__()
        C = conv_kind(depthwise)
        bc = int(wid * 64)
        bd = max(round(dep * 3), 1)
        self.stem = Focus(3, bc, 3)
        self.dark2 = nn.Sequential(C(bc, bc * 2, 3, 2), CSPLayer(bc * 2, bc * 2, bd, True, depthwise))
        self.dark3 = nn.Sequential(C(bc * 2, bc * 4, 3, 2),
                                   CSPLayer(bc * 4, bc * 4, bd * 3, True, depthwise))
        self.dark4 = nn.Sequential(C(bc * 4, bc * 8, 3, 2),
                                   CSPLayer(bc * 8, bc * 8, bd * 3, True, depthwise))
        self.dark5 = nn.Sequential(C(bc * 8, bc * 16, 3, 2), SPPBottleneck(bc * 16, bc * 16),
                                   CSPLayer(bc * 16, bc * 16, bd, False, depthwise))

    def forward(self, x):
        x = self.dark2(self.stem(x))
        d3 = self.dark3(x)
        d4 = self.dark4(d3)
        return d3, d4, self.dark5(d4)


class PAFPN(nn.Module):
    def __init__(self, dep, wid, depthwise):
        super().__init__()
        self.backbone = CSPDarknet(dep, wid, depthwise)
        C = conv_kind(depthwise)
        c0, c1, c2 = int(256 * wid), int(512 * wid), int(1024 * wid)
        n = round(3 * dep)
        self.upsample = nn.Upsample(scale_factor=2, mode='nearest')
        self.lateral_conv0 = BaseConv(c2, c1, 1, 1)
        self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise)
        self.reduce_conv1 = BaseConv(c1, c0, 1, 1)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise)
        self.bu_conv2 = C(c0, c0, 3, 2)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise)
        self.bu_conv1 = C(c1, c1, 3, 2)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise)

    def forward(self, x):
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_conv1(f)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class Head(nn.Module):
    def __init__(self, classes, wid, depthwise):
        super().__init__()
        C = conv_kind(depthwise)
        h = int(256 * wid)
        self.stems = nn.ModuleList([BaseConv(int(c * wid), h, 1, 1) for c in (256, 512, 1024)])
        self.cls_convs = nn.ModuleList([nn.Sequential(C(h, h, 3, 1), C(h, h, 3, 1)) for _ in range(3)])
        self.reg_convs = nn.ModuleList([nn.Sequential(C(h, h, 3, 1), C(h, h, 3, 1)) for _ in range(3)])
        self.cls_preds = nn.ModuleList([nn.Conv2d(h, classes, 1) for _ in range(3)])
        self.reg_preds = nn.ModuleList([nn.Conv2d(h, 4, 1) for _ in range(3)])
        self.obj_preds = nn.ModuleList([nn.Conv2d(h, 1, 1) for _ in range(3)])

    def forward(self, feats):
        outs = []
        for k, x in enumerate(feats):
            x = self.stems[k](x)
            cls = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            reg, obj = self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat)
            outs.append(torch.cat([reg, obj.sigmoid(), cls.sigmoid()], 1))
        return torch.cat([o.flatten(start_dim=2) for o in outs], 2).permute(0, 2, 1)


class YOLOX(nn.Module):
    def __init__(self, name, classes=80, act='silu'):
        super().__init__()
        dep, wid, dw, _ = SIZES[name]
        self.backbone = PAFPN(dep, wid, dw)
        self.head = Head(classes, wid, dw)
        if act != 'silu':   # YOLOX's own `act` argument: every BaseConv's activation
            for m in self.modules():
                if isinstance(m, BaseConv):
                    m.act = ACT[act]()

    def forward(self, x):
        return self.head(self.backbone(x))


def convs_in_order(model, x):
    """The model's Conv2d modules in execution order (the order a trace records them)."""
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return order


def load_onnx_weights(model, path, size):
    """Copies the Conv weights/biases of an official YOLOX ONNX export into `model`, Conv
    node by Conv node; raises ValueError on any count, shape or attribute mismatch."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = [n for n in m.graph.node if n.op_type == 'Conv']
    convs = convs_in_order(model, torch.zeros(1, 3, size, size))
    if len(nodes) != len(convs):
        raise ValueError('%d Conv nodes in %s, %d convs in the reference' % (len(nodes), path,
                                                                              len(convs)))
    for i, (n, c) in enumerate(zip(nodes, convs)):
        w, b = inits[n.input[1]], inits[n.input[2]] if len(n.input) > 2 else None
        attrs = {a.name: list(a.ints) if a.ints else a.i for a in n.attribute}
        if tuple(w.shape) != tuple(c.weight.shape) or b is None or \
                attrs.get('group', 1) != c.groups or attrs.get('strides') != list(c.stride):
            raise ValueError('Conv %d (%s): W %s group %s strides %s; reference %s group %d '
                             'stride %s' % (i, n.name, w.shape, attrs.get('group'),
                                            attrs.get('strides'), tuple(c.weight.shape),
                                            c.groups, c.stride))
        with torch.no_grad():
            c.weight.copy_(torch.from_numpy(w.copy()))
            c.bias.copy_(torch.from_numpy(b.copy()))


def init_weights(model, seed, size, obj_bias, images=()):
    """Seeded N(0, 1/fan_in) convs and U(+-0.1) biases, then one calibration pass on
    calibration_input: every conv is scaled so that its output has std 1 (box
    regressions 0.5), in execution order, each seeing the already-scaled layers before it. obj_bias is then added to the
    objectness biases (negative: a sparse detector, few boxes pass the score threshold)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.2)

    reg = {id(m) for m in model.head.reg_preds}

    def scale(m, inp, out):
        # box regressions at std 0.5: exp(w) stays within ~e^+-2 strides, and few boxes
        # fall wholly outside the image (clipped to zero width) or shrink to a line
        s = float(out.std()) / (0.5 if id(m) in reg else 1.0)
        if s > 0:
            with torch.no_grad():
                m.weight.div_(s)
                m.bias.div_(s)
            return out / s
        return out

    hooks = [m.register_forward_hook(scale) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.from_numpy(calibration_input(size, seed, images)))
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for p in model.head.obj_preds:
            p.bias.add_(obj_bias)


def letterbox(path, size):
    """YOLOX's pre-processing with OpenCV: BGR, r = min(size/h, size/w), bilinear resize,
    top-left on a size x size canvas of 114; float32 [1, 3, size, size]."""
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError('%s: not an image' % path)
    r = min(size / img.shape[0], size / img.shape[1])
    h, w = int(img.shape[0] * r), int(img.shape[1] * r)
    out = np.full((size, size, 3), 114, np.uint8)
    out[:h, :w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return out.transpose(2, 0, 1)[None].astype(np.float32)


def calibration_input(size, seed, images=()):
    """Seeded 0..255 pixel noise and the letterboxed `images`. Calibrated on noise alone,
    the seeded models saturated on photos (deep layers' std grew to 5-9: every score 1.0,
    boxes exp-overflowed), so detection tests calibrate on the photos they run."""
    rng = np.random.default_rng(seed + 777)
    noise = rng.integers(0, 256, size=(1, 3, size, size)).astype(np.float32)
    return np.concatenate([noise] + [letterbox(p, size) for p in images], 0)


def make_input(batch, size, seed):
    rng = np.random.default_rng(seed + 54321)
    return rng.integers(0, 256, size=(batch, 3, size, size)).astype(np.float32)


def num_anchors(size):
    return sum((size // s) ** 2 for s in (8, 16, 32))


def export_onnx(model, x, path):
    """Like YOLOX's tools/export_onnx.py: opset 11, input `images`, output `output`,
    static shapes, decode_in_inference off (TorchScript exporter; dynamo off)."""
    import inspect
    kw = {'opset_version': 11, 'input_names': ['images'], 'output_names': ['output'],
          'do_constant_folding': True}
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        kw['dynamo'] = False
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, x, path, **kw)


def export(name, size, seed, out, obj_bias=-2.0, classes=80, images=(), act='silu'):
    """Writes model.onnx, input.f32, output.f32 ([1, A, 5 + classes], eager FP32) and
    meta.json into out; images: photos to calibrate on besides noise."""
    if size % 32:
        raise ValueError('size must be a multiple of 32')
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    model = YOLOX(name, classes, act).eval()
    init_weights(model, seed, size, obj_bias, images)
    x = torch.from_numpy(make_input(1, size, seed))
    with torch.no_grad():
        y = model(x)
    export_onnx(model, x, os.path.join(out, 'model.onnx'))
    x.numpy().tofile(os.path.join(out, 'input.f32'))
    y.numpy().astype(np.float32).tofile(os.path.join(out, 'output.f32'))
    meta = {'model': name, 'size': size, 'seed': seed, 'obj_bias': obj_bias, 'act': act,
            'calibration_images': [os.path.basename(p) for p in images],
            'classes': classes, 'A': num_anchors(size), 'output_shape': list(y.shape),
            'params': sum(p.numel() for p in model.parameters())}
    with open(os.path.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    e = sub.add_parser('export')
    e.add_argument('--model', required=True, choices=sorted(SIZES))
    e.add_argument('--size', type=int)
    e.add_argument('--seed', type=int, default=0)
    e.add_argument('--obj-bias', type=float, default=-2.0)
    e.add_argument('--calibrate', nargs='*', default=[], help='photos to calibrate on')
    e.add_argument('--classes', type=int, default=80)
    e.add_argument('--act', default='silu', choices=sorted(ACT))
    e.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    meta = export(a.model, a.size or SIZES[a.model][3], a.seed, a.out, a.obj_bias, a.classes,
                  a.calibrate, a.act)
    print(json.dumps(meta))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
