#!/usr/bin/env python3
"""Writes the training-level SSL fixtures: 10 steps of SimCLR and of BYOL on a tiny model.

Usage: gen_ssl_train.py OUT_DIR        (the C++ twin: tests/test_ssl_train.cpp)

The model: Tiny (conv 3x3 1->4, BN, ReLU, conv 3x3 stride 2 4->8, BN, ReLU, global average
pool; tests/test_ssl_common.h's TinyNet) with small heads shaped as siam's defaults:
  SimCLR  projector Linear(8, 16, no bias) BN ReLU Linear(16, 8, no bias) BN; NT-Xent, T = 0.5,
          both views in one batch.
  BYOL    projector and predictor Linear(8, 16) BN ReLU Linear(16, 8, no bias); each view on its
          own; target = EMA of backbone + projector with tau_k = 1 - (1 - 0.9)(cos(pi k/10) + 1)/2
          after step k, buffers copied from the online network (nn::EmaUpdater's rule).
No weights are stored: every parameter and buffer is filled from formula(name) below (gen_models.py's
sine formula, rounded to f32 so siam's f32 and f64 runs start from PyTorch's exact weights; kept
here so an edit there cannot silently stale these fixtures), named as in siam's state dict (a
target takes its online twin's name, "target_" dropped). C++ twin: tests/test_ssl_common.h.
Training: torch.optim.SGD, lr 0.1, momentum 0.9, weight decay 1e-3 on parameters with 2+
dimensions and none on biases and norm parameters (siam's "bias_and_norm" group), 10 steps on
one fixed pair of views, in f64. Each file holds `views` (2, 8, 1, 8, 8) f32 and `loss` (10):
the loss of each step before its update; metadata format_version, torch_version, method.
"""
import copy
import math
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from cases_ssl import byol_ref, nt_xent_simclr  # noqa: E402

FORMAT_VERSION = 1
STEPS = 10
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-3
TEMPERATURE = 0.5
BYOL_BASE_MOMENTUM = 0.9


def formula(name, shape):
    """A sine wave whose phase depends on the name, scaled by the kind of tensor, f32-exact."""
    n = int(np.prod(shape)) if len(shape) else 1
    s = np.sin(0.37 * np.arange(n, dtype=np.float64) + (zlib.crc32(name.encode()) % 1000) / 100.0)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        v = np.zeros(n)
    elif leaf == "running_var":
        v = 1.0 + 0.25 * s
    elif leaf == "running_mean":
        v = 0.1 * s
    elif len(shape) == 1 and leaf == "weight":  # norm layer scale
        v = 1.0 + 0.1 * s
    elif len(shape) == 1:
        v = 0.05 * s
    else:
        v = s * math.sqrt(6.0 / (n // shape[0]))
    return v.astype(np.float32).astype(np.float64).reshape(shape)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return y.mean((2, 3))


def mlp(in_dim, dims, hidden_bias, last_bias, last_bn):
    """ssl::make_mlp: hidden Linear -> BN -> ReLU, last Linear [-> BN]."""
    layers = []
    for i, d in enumerate(dims):
        last = i == len(dims) - 1
        layers.append(nn.Linear(in_dim, d, bias=last_bias if last else hidden_bias))
        if not last:
            layers += [nn.BatchNorm1d(d), nn.ReLU()]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d))
        in_dim = d
    return nn.Sequential(*layers)


class SimCLR(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Tiny()
        self.projector = mlp(8, [16, 8], hidden_bias=False, last_bias=False, last_bn=True)

    def loss(self, v1, v2):
        return nt_xent_simclr(self.projector(self.backbone(torch.cat([v1, v2]))), TEMPERATURE)

    def after_step(self, k):
        pass


class BYOL(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Tiny()
        self.projector = mlp(8, [16, 8], hidden_bias=True, last_bias=False, last_bn=False)
        self.predictor = mlp(8, [16, 8], hidden_bias=True, last_bias=False, last_bn=False)
        self.target_backbone = copy.deepcopy(self.backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_backbone.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)

    def loss(self, v1, v2):
        z1 = self.projector(self.backbone(v1))
        z2 = self.projector(self.backbone(v2))
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(v1))
            t2 = self.target_projector(self.target_backbone(v2))
        return byol_ref(self.predictor(z1), self.predictor(z2), t1, t2)

    @torch.no_grad()
    def after_step(self, k):
        tau = 1 - (1 - BYOL_BASE_MOMENTUM) * (math.cos(math.pi * k / STEPS) + 1) / 2
        for target, online in ((self.target_backbone, self.backbone), (self.target_projector, self.projector)):
            for pt, po in zip(target.parameters(), online.parameters()):
                pt.mul_(tau).add_(po, alpha=1 - tau)
            for bt, bo in zip(target.buffers(), online.buffers()):
                bt.copy_(bo)


def fill(model):
    with torch.no_grad():
        for name, t in model.state_dict().items():
            source = name[len("target_"):] if name.startswith("target_") else name
            t.copy_(torch.from_numpy(formula(source, tuple(t.shape))))


def views():
    g = np.random.default_rng(20240612)
    v1 = g.standard_normal((8, 1, 8, 8)).astype(np.float32)
    v2 = (v1 + 0.3 * g.standard_normal((8, 1, 8, 8))).astype(np.float32)
    return np.stack([v1, v2])


def run(name, make, out_dir):
    model = make().double().train()
    fill(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in trainable if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for _, p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM)
    v = views()
    v1, v2 = torch.from_numpy(v[0]).double(), torch.from_numpy(v[1]).double()
    losses = []
    for k in range(STEPS):
        opt.zero_grad()
        loss = model.loss(v1, v2)
        loss.backward()
        opt.step()
        model.after_step(k)
        losses.append(loss.item())
    meta = {"format_version": FORMAT_VERSION, "torch_version": torch.__version__, "method": name}
    st.save(os.path.join(out_dir, name + "_train.safetensors"), {"views": v, "loss": np.array(losses)}, meta)
    print(f"gen_ssl_train.py: {name}: losses {np.array(losses)}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    run("simclr", SimCLR, out_dir)
    run("byol", BYOL, out_dir)


if __name__ == "__main__":
    main()
