#!/usr/bin/python3
"""Independent PyTorch re-implementation of DAMO-YOLO (T, S, M, L, Ns, Nm, Nl, N).

Written from shared/docs/damoyolo.md alone (no upstream code); module and parameter names
mirror the upstream train-form keys of spec section 12 so real checkpoints could be loaded.
It is the reference the C engine is compared against: seeded random weights (section 12),
an ONNX export shaped like the official converter's (section 9), and eager FP32 outputs.

CLI:
  damoyolo.py export --model T --form deploy|train --size 640 --batch 1 --seed 0 --out DIR
  damoyolo.py info --model T            (parameter counts)
"""
import argparse
import hashlib
import json
import math
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3        # spec section 2: every BN2d, overriding PyTorch's 1e-5
BN_MOMENTUM = 0.03


# ----------------------------------------------------------------------------------------
# Basic layers

class SiLU(nn.Module):
    """x * sigmoid(x) written out: the official exporter replaces nn.SiLU so that ONNX
    shows Sigmoid + Mul pairs (section 2)."""

    def forward(self, x):
        return x * torch.sigmoid(x)


def make_act(name):
    if name == 'relu':
        return nn.ReLU(inplace=False)
    if name == 'silu':
        return SiLU()
    if name is None or name == 'identity':
        return nn.Identity()
    raise ValueError('unknown activation %r' % name)


def bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBNAct(nn.Module):
    """Conv(bias=False, pad=(k-1)//2) -> BN -> act; keys .conv/.bn (neck, SPP, Focus)."""

    def __init__(self, cin, cout, k, s=1, act='relu', groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False)
        self.bn = bn(cout)
        self.act = make_act(act)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ConvKXBNRELU(nn.Module):
    """Backbone flavour of ConvBNAct; upstream keys .conv1/.bn1 (section 12)."""

    def __init__(self, cin, cout, k, s=1, act='relu'):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, bias=False)
        self.bn1 = bn(cout)
        self.act = make_act(act)

    def forward(self, x):
        return self.act(self.bn1(self.conv1(x)))


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, k, s, pad):
        super().__init__()
        self.add_module('conv', nn.Conv2d(cin, cout, k, s, pad, bias=False))
        self.add_module('bn', bn(cout))


def fold_bn(conv_w, bnm):
    """(W * gamma/sqrt(var+eps), beta - mean*gamma/sqrt(var+eps)) per output channel."""
    std = torch.sqrt(bnm.running_var + bnm.eps)
    t = bnm.weight / std
    return conv_w * t.reshape(-1, 1, 1, 1), bnm.bias - bnm.running_mean * t


class RepConv(nn.Module):
    """3x3 re-parameterisable conv (section 3.2). Training form: BN(3x3) + BN(1x1), no
    identity branch; deploy form: one biased 3x3 conv. Then act."""

    def __init__(self, cin, cout, s=1, act='relu'):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, s
        self.rbr_dense = ConvBN(cin, cout, 3, s, 1)
        self.rbr_1x1 = ConvBN(cin, cout, 1, s, 0)
        self.act = make_act(act)
        self.deploy = False

    def forward(self, x):
        if self.deploy:
            return self.act(self.rbr_reparam(x))
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x))

    def fuse(self):
        if self.deploy:
            return
        w3, b3 = fold_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        w1, b1 = fold_bn(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        # 1x1/pad 0 samples the same point as the 3x3/pad 1 centre tap (also at stride 2).
        w = w3 + F.pad(w1, [1, 1, 1, 1])
        conv = nn.Conv2d(self.cin, self.cout, 3, self.stride, 1, bias=True)
        conv.weight.data.copy_(w.detach())
        conv.bias.data.copy_((b3 + b1).detach())
        self.rbr_reparam = conv
        del self.rbr_dense
        del self.rbr_1x1
        self.deploy = True


class Focus(nn.Module):
    """Space-to-depth by 2, groups (r0,c0),(r1,c0),(r0,c1),(r1,c1); then 3x3 s1 conv."""

    def __init__(self, cin, cout, k=3, act='relu'):
        super().__init__()
        self.conv = ConvBNAct(cin * 4, cout, k, 1, act)

    def forward(self, x):
        tl = x[..., ::2, ::2]
        bl = x[..., 1::2, ::2]
        tr = x[..., ::2, 1::2]
        br = x[..., 1::2, 1::2]
        return self.conv(torch.cat([tl, bl, tr, br], 1))


class SPP(nn.Module):
    """Parallel max pools 5/9/13 around 1x1 convs; always SiLU (section 3.4)."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = ConvBNAct(c, c // 2, 1, 1, 'silu')
        self.m = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13)])
        self.conv2 = ConvBNAct(2 * c, c, 1, 1, 'silu')

    def forward(self, x):
        h = self.conv1(x)
        return self.conv2(torch.cat([h] + [m(h) for m in self.m], 1))


class ResConvBlock(nn.Module):
    """Backbone residual block (section 3.3): stride on the RepConv, act after the add."""

    def __init__(self, cin, cout, btn, s, k1, act):
        super().__init__()
        if s == 1 and cin != cout:
            raise ValueError('projection shortcut is not used by any released model')
        self.conv1 = ConvKXBNRELU(cin, btn, k1, 1, act)
        self.conv2 = RepConv(btn, cout, s, act='identity')
        self.residual = (s == 1)
        self.act = make_act(act)

    def forward(self, x):
        h = self.conv2(self.conv1(x))
        if self.residual:
            h = h + x
        return self.act(h)


def make_div8(v):
    n = max(8, int(v + 4) // 8 * 8)
    if n < 0.9 * v:
        n += 8
    return n


class MobileV3Block(nn.Module):
    """1x1 -> BN -> act -> dw5x5(s) -> BN -> act -> 1x1 -> BN, residual iff s==1 and
    cin==cout (section 3.6). Sequential indices conv.0..7 as upstream."""

    def __init__(self, cin, cout, e, s, act='silu'):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, e, 1, 1, 0, bias=False), bn(e), make_act(act),
            nn.Conv2d(e, e, 5, s, 2, groups=e, bias=False), bn(e), make_act(act),
            nn.Conv2d(e, cout, 1, 1, 0, bias=False), bn(cout))
        self.residual = (s == 1 and cin == cout)

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.residual else y


class DepthwiseDown(nn.Module):
    """Nano neck downsample (section 3.7)."""

    def __init__(self, c, act='silu'):
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, 2, 1, groups=c, bias=False)
        self.dwnorm = bn(c)
        self.pointwise = nn.Conv2d(c, c, 1, 1, 0, bias=False)
        self.pwnorm = bn(c)
        self.act = make_act(act)

    def forward(self, x):
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


# ----------------------------------------------------------------------------------------
# Backbones (section 4)

class Stage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.block_list = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.block_list:
            x = b(x)
        return x


# (cin, cout, btn, stride, nblocks, spp) per stage after the Focus stem
RES_CFG = {
    'T': (24, [(24, 64, 24, 2, 2), (64, 96, 64, 2, 2), (96, 192, 96, 2, 2),
               (192, 192, 152, 1, 2), (192, 384, 192, 2, 1)]),
    'S': (32, [(32, 128, 24, 2, 1), (128, 128, 88, 2, 5), (128, 256, 128, 2, 3),
               (256, 256, 120, 1, 2), (256, 512, 144, 2, 1)]),
}


class TinyNASRes(nn.Module):
    """T and S: Focus + 5 stages of k1kx residual blocks, SPP after block 0 of the last."""

    def __init__(self, name):
        super().__init__()
        stem, stages = RES_CFG[name]
        blocks = [Focus(3, stem, 3, 'relu')]
        for i, (cin, cout, btn, s, n) in enumerate(stages):
            st = []
            for j in range(n):
                st.append(ResConvBlock(cin if j == 0 else cout, cout, btn,
                                       s if j == 0 else 1, 1, 'relu'))
                if j == 0 and i == len(stages) - 1:
                    st.append(SPP(cout))
            blocks.append(Stage(st))
        self.block_list = nn.ModuleList(blocks)

    def forward(self, x):
        outs = []
        for i, b in enumerate(self.block_list):
            x = b(x)
            if i in (2, 4, 5):
                outs.append(x)
        return outs


class KXKXBlock(ResConvBlock):
    def __init__(self, h, btn):
        super().__init__(h, h, btn, 1, 3, 'silu')


class CSPStage(nn.Module):
    """M/L backbone stage wrapper (section 3.5); wrapper convs are ReLU."""

    def __init__(self, cin, cout, btn, n, spp):
        super().__init__()
        h = cout // 2
        self.downsampler = ConvKXBNRELU(cin, cout, 3, 2, 'relu')
        self.spp = SPP(cout) if spp else None
        self.conv_shortcut = ConvKXBNRELU(cout, cout // 2, 1, 1, 'relu')
        self.conv_start = ConvKXBNRELU(cout, h, 1, 1, 'relu')
        self.convs = nn.ModuleList([KXKXBlock(h, btn) for _ in range(n)])
        self.conv_fuse = ConvKXBNRELU(h + cout // 2, cout, 1, 1, 'relu')

    def forward(self, x):
        x = self.downsampler(x)
        if self.spp is not None:
            x = self.spp(x)
        sc = self.conv_shortcut(x)
        y = self.conv_start(x)
        for b in self.convs:
            y = b(y)
        return self.conv_fuse(torch.cat([y, sc], 1))


CSP_CFG = {  # (cin, cout, btn, n) per CSP stage 1..4; SPP in the last
    'M': [(32, 128, 64, 1), (128, 128, 64, 3), (128, 256, 256, 7), (256, 512, 256, 2)],
    'L': [(32, 128, 96, 2), (128, 128, 96, 4), (128, 256, 384, 9), (256, 512, 384, 3)],
}


class TinyNASCSP(nn.Module):
    def __init__(self, name):
        super().__init__()
        st = [Focus(3, 32, 3, 'silu')]
        cfg = CSP_CFG[name]
        for i, (cin, cout, btn, n) in enumerate(cfg):
            st.append(CSPStage(cin, cout, btn, n, i == len(cfg) - 1))
        self.csp_stage = nn.ModuleList(st)

    def forward(self, x):
        outs = []
        for i, b in enumerate(self.csp_stage):
            x = b(x)
            if i >= 2:
                outs.append(x)
        return outs


# Nano: stem width, focus?, per stage list of (cout, stride, nblocks), spp stage index
NANO_CFG = {
    'Ns': (16, False, [(24, 2, 1), (40, 2, 2), (64, 2, 2), (80, 1, 2), (160, 2, 2)]),
    'Nm': (16, False, [(40, 2, 2), (64, 2, 2), (112, 2, 2), (128, 1, 2), (256, 2, 1)]),
    'Nl': (24, False, [(48, 2, 1), (80, 2, 2), (160, 2, 2), (160, 1, 3), (320, 2, 2)]),
    'N': (16, True, [(40, 2, 2), (80, 2, 2), (112, 2, 2), (112, 1, 2), (160, 2, 1)]),
}


def nano_expansion(cout, stage):
    """e = make_div8(ceil(cout * ratio)), ratio 3.5 + 0.5 (stage-1) (section 3.6)."""
    return make_div8(math.ceil(cout * (3.5 + 0.5 * (stage - 1))))


class TinyNASMob(nn.Module):
    def __init__(self, name):
        super().__init__()
        c0, focus, stages = NANO_CFG[name]
        blocks = [Focus(3, c0, 3, 'silu') if focus else ConvBNAct(3, c0, 3, 2, 'silu')]
        cin = c0
        for i, (cout, s, n) in enumerate(stages):
            e = nano_expansion(cout, i + 1)
            st = []
            for j in range(n):
                st.append(MobileV3Block(cin if j == 0 else cout, cout, e, s if j == 0 else 1))
                if j == 0 and i == len(stages) - 1:
                    st.append(SPP(cout))
            blocks.append(Stage(st))
            cin = cout
        self.block_list = nn.ModuleList(blocks)

    def forward(self, x):
        outs = []
        for i, b in enumerate(self.block_list):
            x = b(x)
            if i in (2, 4, 5):
                outs.append(x)
        return outs


# ----------------------------------------------------------------------------------------
# Neck (section 5)

class BasicBlock3x3Reverse(nn.Module):
    """Neck inner block: conv2 (RepConv m->hid, act) runs first, conv1 (3x3 hid->m, act)
    second, plain residual add with no act after it (sections 3.8, 14.21)."""

    def __init__(self, m, hid, act):
        super().__init__()
        self.conv1 = ConvBNAct(hid, m, 3, 1, act)
        self.conv2 = RepConv(m, hid, 1, act)

    def forward(self, x):
        return x + self.conv1(self.conv2(x))


class Fuse(nn.Module):
    """CSPStage of the neck (ELAN-like): cat[conv1, b1..bn] -> conv3."""

    def __init__(self, cin, cout, n, ratio, act, nano):
        super().__init__()
        half, m = cout // 2, cout - cout // 2
        self.conv1 = ConvBNAct(cin, half, 1, 1, act)
        self.conv2 = ConvBNAct(cin, m, 1, 1, act)
        if nano:
            e = make_div8(math.ceil(m * 3.0))
            blocks = [MobileV3Block(m, m, e, 1, act) for _ in range(n)]
        else:
            blocks = [BasicBlock3x3Reverse(m, int(m * ratio), act) for _ in range(n)]
        self.convs = nn.ModuleList(blocks)
        self.conv3 = ConvBNAct(half + n * m, cout, 1, 1, act)

    def forward(self, x):
        outs = [self.conv1(x)]
        y = self.conv2(x)
        for b in self.convs:
            y = b(y)
            outs.append(y)
        return self.conv3(torch.cat(outs, 1))


class GiraffeNeckV2(nn.Module):
    def __init__(self, cin, cout, depth, ratio, act, nano):
        super().__init__()
        c3, c4, c5 = cin
        o3, o4, o5 = cout
        n = round(3 * depth)   # Python round-half-to-even: 1.5 -> 4 (section 1)

        def down(c):
            return DepthwiseDown(c, act) if nano else ConvBNAct(c, c, 3, 2, act)

        self.bu_conv13 = down(c4)
        self.merge_3 = Fuse(c5 + c4, c5, n, ratio, act, nano)
        self.bu_conv24 = down(c3)
        self.merge_4 = Fuse(c4 + c3 + c5, c4, n, ratio, act, nano)
        self.merge_5 = Fuse(c3 + c4, o3, n, ratio, act, nano)
        self.bu_conv57 = down(o3)
        self.merge_7 = Fuse(c4 + o3, o4, n, ratio, act, nano)
        self.bu_conv46 = down(c4)
        self.bu_conv76 = down(o4)
        self.merge_6 = Fuse(c5 + c4 + o4, o5, n, ratio, act, nano)

    @staticmethod
    def up(x):
        return F.interpolate(x, scale_factor=2.0, mode='nearest')

    def forward(self, feats):
        x3_in, x4_in, x5_in = feats
        x3 = self.merge_3(torch.cat([x5_in, self.bu_conv13(x4_in)], 1))
        up3 = self.up(x3)
        x4 = self.merge_4(torch.cat([x4_in, self.bu_conv24(x3_in), up3], 1))
        up4 = self.up(x4)
        p3 = self.merge_5(torch.cat([x3_in, up4], 1))
        p4 = self.merge_7(torch.cat([x4, self.bu_conv57(p3)], 1))
        p5 = self.merge_6(torch.cat([x3, self.bu_conv46(x4), self.bu_conv76(p4)], 1))
        return [p3, p4, p5]


# ----------------------------------------------------------------------------------------
# Head (section 6) with the in-graph decode of sections 6 and 9

class Scale(nn.Module):
    def __init__(self, v=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(v, dtype=torch.float32))  # 0-d

    def forward(self, x):
        return x * self.scale


class Integral(nn.Module):
    def __init__(self, reg_max):
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer('project', torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x):
        # x: [B, A, 4, R+1] probabilities -> expected distance [B, A, 4]
        b, a = x.shape[0], x.shape[1]
        y = torch.matmul(x.reshape(-1, self.reg_max + 1),
                         self.project.reshape(self.reg_max + 1, 1))
        return y.reshape(b, a, 4)


class ZeroHead(nn.Module):
    def __init__(self, cin, reg_max, k, num_classes=80, strides=(8, 16, 32)):
        super().__init__()
        self.nc, self.reg_max, self.strides = num_classes, reg_max, strides
        self.gfl_cls = nn.ModuleList([nn.Conv2d(c, num_classes, k, 1, (k - 1) // 2)
                                      for c in cin])
        self.gfl_reg = nn.ModuleList([nn.Conv2d(c, 4 * (reg_max + 1), k, 1, (k - 1) // 2)
                                      for c in cin])
        self.scales = nn.ModuleList([Scale(1.0) for _ in strides])
        self.integral = Integral(reg_max)

    def priors(self, b, sizes, device, dtype):
        """Anchor points (no +0.5) and strides as baked constants, leading dim B."""
        xs, ys, ss = [], [], []
        for (h, w), s in zip(sizes, self.strides):
            yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
            xs.append((xx.reshape(-1) * s).astype(np.float32))
            ys.append((yy.reshape(-1) * s).astype(np.float32))
            ss.append(np.full(h * w, s, np.float32))
        x = np.tile(np.concatenate(xs)[None], (b, 1))
        y = np.tile(np.concatenate(ys)[None], (b, 1))
        st = np.tile(np.concatenate(ss)[None, :, None], (b, 1, 1))
        return tuple(torch.from_numpy(a).to(device=device, dtype=dtype) for a in (x, y, st))

    def forward(self, feats):
        r1 = self.reg_max + 1
        cls_l, reg_l = [], []
        for i, x in enumerate(feats):
            reg = self.scales[i](self.gfl_reg[i](x)).float()
            cls = self.gfl_cls[i](x).sigmoid()
            reg_l.append(reg)
            cls_l.append(cls)
        scores, dists, sizes = [], [], []
        for reg, cls in zip(reg_l, cls_l):
            n, _, h, w = reg.shape
            sizes.append((h, w))
            p = F.softmax(reg.reshape(n, 4, r1, h, w), dim=2).reshape(n, 4, r1, h, w)
            dists.append(p.flatten(start_dim=3).permute(0, 3, 1, 2))     # [B, HW, 4, R+1]
            scores.append(cls.flatten(start_dim=2).permute(0, 2, 1))    # [B, HW, 80]
        scores = torch.cat(scores, 1)[:, :, :self.nc]
        dist = torch.cat(dists, 1)
        # The decode stays in the probabilities' dtype (FP32; FP16 for a .half() model):
        # under BF16 autocast the bins' matmul would otherwise run in BF16 (section 14.20).
        with torch.autocast(device_type=dist.device.type, enabled=False):
            d = self.integral(dist)
            px, py, st = self.priors(d.shape[0], sizes, d.device, d.dtype)
            d = d * st
            x1 = px - d[..., 0]
            y1 = py - d[..., 1]
            x2 = px + d[..., 2]
            y2 = py + d[..., 3]
            boxes = torch.stack([x1, y1, x2, y2], -1)
        return scores, boxes


# ----------------------------------------------------------------------------------------
# Whole model

MODELS = {
    # backbone, neck in, neck out, depth, hidden ratio, neck act, reg_max, head k, nano neck
    'T': ('res', (96, 192, 384), (64, 128, 256), 1.0, 1.0, 'relu', 16, 3, False),
    'S': ('res', (128, 256, 512), (128, 256, 512), 1.0, 0.75, 'relu', 16, 3, False),
    'M': ('csp', (128, 256, 512), (128, 256, 512), 1.5, 1.0, 'silu', 16, 3, False),
    'L': ('csp', (128, 256, 512), (128, 256, 512), 2.0, 1.0, 'silu', 16, 3, False),
    'Ns': ('mob', (40, 80, 160), (40, 80, 160), 0.5, 1.0, 'silu', 7, 1, True),
    'Nm': ('mob', (64, 128, 256), (64, 128, 256), 0.5, 1.0, 'silu', 7, 1, True),
    'Nl': ('mob', (80, 160, 320), (80, 160, 320), 0.5, 1.0, 'silu', 7, 1, True),
    'N': ('mob', (80, 112, 160), (64, 128, 256), 0.5, 1.0, 'silu', 7, 3, True),
}
DEFAULT_SIZE = {'T': 640, 'S': 640, 'M': 640, 'L': 640, 'Ns': 416, 'Nm': 416, 'Nl': 416,
                'N': 416}


class DAMOYOLO(nn.Module):
    def __init__(self, name, num_classes=80):
        super().__init__()
        kind, cin, cout, depth, ratio, act, reg_max, k, nano = MODELS[name]
        self.name = name
        self.backbone = {'res': TinyNASRes, 'csp': TinyNASCSP, 'mob': TinyNASMob}[kind](name)
        self.neck = GiraffeNeckV2(cin, cout, depth, ratio, act, nano)
        self.head = ZeroHead(cout, reg_max, k, num_classes)

    def forward(self, x):
        return self.head(self.neck(self.backbone(x)))

    def fuse(self):
        for m in list(self.modules()):
            if isinstance(m, RepConv):
                m.fuse()
        return self


def init_weights(model, seed):
    """Seeded random weights that make parity meaningful (section 12)."""
    g = torch.Generator().manual_seed(seed)

    def u(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(u(m.bias.shape, -0.1, 0.1))
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(u(c, 0.9, 1.1))
                m.bias.copy_(u(c, -0.1, 0.1))
                m.running_mean.copy_(u(c, -0.1, 0.1))
                m.running_var.copy_(u(c, 0.05, 2.0))
        calibrate_gains(model, seed)
        for i, s in enumerate(model.head.scales):
            # != 1 and distinct per level; also a temperature > 1 so softmaxes are not flat
            s.scale.fill_(float(1.3 + 0.35 * i + 0.05 * u(1, -1, 1).item()))
    return model


def calibrate_gains(model, seed, size=256):
    """Rescale each conv weight (a per-layer gain on N(0,1/fan_in)) so that, on a seeded
    0..255 calibration image, every conv output has std 1 (head: cls logits std 2, reg
    logits std 1). Without this the un-normalised 0..255 input and the deep residual
    sums saturate every sigmoid and softmax, and parity on saturated outputs proves
    little. Calibrated at 256 px: at tiny sizes the stride-32 maps are all border and
    the deep models (L) come out saturated at 320/640 again. One pass: each hook rescales its own weight and output, so later layers
    already see the calibrated activations. BN statistics keep the section 12 ranges."""
    head_target = {}
    for m in model.head.gfl_cls:
        head_target[id(m)] = 2.0
    for m in model.head.gfl_reg:
        head_target[id(m)] = 1.0

    def hook(mod, inp, out):
        b = mod.bias.reshape(1, -1, 1, 1) if mod.bias is not None else 0.0
        core = out - b
        std = float(core.std())
        if not math.isfinite(std) or std <= 0:
            return out
        k = head_target.get(id(mod), 1.0) / std
        mod.weight.mul_(k)
        return core * k + b

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    try:
        model.eval()
        model(torch.from_numpy(make_input(1, size, seed + 777)))
    finally:
        for h in hooks:
            h.remove()


def build(name, seed=0, form='train', num_classes=80):
    model = init_weights(DAMOYOLO(name, num_classes), seed).eval()
    if form == 'deploy':
        model.fuse()
    return model


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def make_input(batch, size, seed):
    rng = np.random.default_rng(seed + 12345)
    return rng.integers(0, 256, size=(batch, 3, size, size)).astype(np.float32)


def num_anchors(size):
    return sum((size // s) ** 2 for s in (8, 16, 32))


def export_onnx(model, x, path, form='deploy', opset=11, dynamic=False):
    """torch.onnx.export like the official converter: opset 11, input `images`, only the
    first output named (`output`), static shapes. Eval mode folds BN into the convs
    (official behaviour); PRESERVE keeps BatchNormalization for the training form.
    opset / dynamic (a symbolic batch, as `--dynamic` exports write) vary the export.
    Works with torch 1.13 and 2.x (TorchScript exporter; dynamo off)."""
    import inspect
    kw = {'opset_version': opset, 'input_names': ['images'], 'output_names': ['output'],
          'do_constant_folding': True}
    if dynamic:
        kw['dynamic_axes'] = {'images': {0: 'batch'}, 'output': {0: 'batch'}}
    params = inspect.signature(torch.onnx.export).parameters
    if 'training' in params:
        kw['training'] = (torch.onnx.TrainingMode.EVAL if form == 'deploy'
                          else torch.onnx.TrainingMode.PRESERVE)
    if 'dynamo' in params:
        kw['dynamo'] = False
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about the baked anchor constants are expected: the official
        # export also bakes batch and size into the graph (section 9).
        warnings.simplefilter('ignore')
        torch.onnx.export(model, x, path, **kw)


def export(name, form, size, batch, seed, out, cls_bias=0.0, opset=11, dynamic=False,
           classes=80):
    """Write model.onnx, input.f32, scores.f32, boxes.f32, meta.json into out.

    cls_bias (default 0) is added to every class-logit bias after calibration. At 0 the
    calibrated class logits have std 2 around 0, so nearly every (anchor, class) scores
    above the 0.05 threshold (10^5 near-tied candidates per image at 640): right for
    parity of the network's outputs, but detections are then decided by rounding. A
    negative bias makes the seeded model sparse like a trained detector, for end-to-end
    detection tests (-9: none to a few hundred candidates per photo; the device's
    detections then match the cpu engine's on the shared photos, 362 of 371 boxes over
    the emulated device; synthetic flat pictures still give near-tied runs)."""
    if size % 32 != 0:
        raise ValueError('size must be a multiple of 32')
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    model = build(name, seed, form, classes)
    if cls_bias:
        with torch.no_grad():
            for m in model.head.gfl_cls:
                m.bias.add_(float(cls_bias))
    x = torch.from_numpy(make_input(batch, size, seed))
    with torch.no_grad():
        scores, boxes = model(x)
    # a dynamic export is traced at batch 1 as converters do (shapes the tracer saw as
    # numbers stay numbers) and must then run the reference's batch
    export_onnx(model, x[:1] if dynamic else x, os.path.join(out, 'model.onnx'), form, opset,
                dynamic)
    x.numpy().tofile(os.path.join(out, 'input.f32'))
    scores.numpy().astype(np.float32).tofile(os.path.join(out, 'scores.f32'))
    boxes.numpy().astype(np.float32).tofile(os.path.join(out, 'boxes.f32'))
    meta = {'model': name, 'form': form, 'size': size, 'batch': batch, 'seed': seed,
            'cls_bias': float(cls_bias), 'opset': opset, 'dynamic_batch': bool(dynamic),
            'classes': classes,
            'A': num_anchors(size), 'input_shape': list(x.shape),
            'scores_shape': list(scores.shape), 'boxes_shape': list(boxes.shape),
            'params': count_params(model), 'source_sha1': source_hash(),
            # share of scores in (0.01, 0.99): parity on saturated outputs means little
            'scores_unsaturated': float(((scores > 0.01) & (scores < 0.99)).float().mean())}
    with open(os.path.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


def source_hash():
    with open(os.path.abspath(__file__), 'rb') as f:
        return hashlib.sha1(f.read()).hexdigest()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    e = sub.add_parser('export')
    e.add_argument('--model', required=True, choices=sorted(MODELS))
    e.add_argument('--form', default='deploy', choices=['deploy', 'train'])
    e.add_argument('--size', type=int, default=0)
    e.add_argument('--batch', type=int, default=1)
    e.add_argument('--seed', type=int, default=0)
    e.add_argument('--cls-bias', type=float, default=0.0,
                   help='added to the class-logit biases (negative: sparse detections)')
    e.add_argument('--out', required=True)
    i = sub.add_parser('info')
    i.add_argument('--model', required=True, choices=sorted(MODELS))
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if a.cmd == 'export':
        meta = export(a.model, a.form, a.size or DEFAULT_SIZE[a.model], a.batch, a.seed, a.out,
                      a.cls_bias)
        print(json.dumps(meta))
    else:
        tr = count_params(build(a.model, 0, 'train'))
        de = count_params(build(a.model, 0, 'deploy'))
        print(json.dumps({'model': a.model, 'params_train': tr, 'params_deploy': de}))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
