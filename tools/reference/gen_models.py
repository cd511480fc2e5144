#!/usr/bin/env python3
"""Writes whole-model fixtures: torchvision ResNets and a timm-named ViT-S/16.

Usage: gen_models.py OUT_DIR

Weights are not stored: both sides fill every parameter and buffer from the formula in
formula() (tests/test_models.cpp has its twin), so a fixture holds only the input, the
output, the upstream gradient, and per parameter the gradient's L2 norm, sum and 64 evenly
spaced elements. PyTorch runs in f64, in training mode (batch statistics).
"""
import math
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

FORMAT_VERSION = 1
SAMPLES = 64


def formula(name, shape):
    """Deterministic parameter values: a sine wave whose phase depends on the name."""
    n = int(np.prod(shape)) if len(shape) else 1
    i = np.arange(n, dtype=np.float64)
    s = np.sin(0.37 * i + (zlib.crc32(name.encode()) % 1000) / 100.0)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        v = np.zeros(n)
    elif leaf == "running_var":
        v = 1.0 + 0.25 * s
    elif leaf == "running_mean":
        v = 0.1 * s
    elif leaf in ("pos_embed", "cls_token"):
        v = 0.02 * s
    elif len(shape) == 1 and leaf == "weight":  # norm layer scale
        v = 1.0 + 0.1 * s
    elif len(shape) == 1:
        v = 0.05 * s
    else:
        v = s * math.sqrt(6.0 / (n // shape[0]))
    return v.reshape(shape)


def fill(model):
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.copy_(torch.from_numpy(formula(name, tuple(t.shape))))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1) / math.sqrt(c // self.heads)).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, dim * 4)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    """timm's VisionTransformer (class token, learned position embedding, pre-norm), same names."""

    def __init__(self, image, patch=16, dim=384, depth=12, heads=6, classes=1000):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def small_resnet18():
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


MODELS = {
    "resnet50": (lambda: torchvision.models.resnet50(), (2, 3, 64, 64)),
    "resnet18_small_gray": (small_resnet18, (4, 1, 28, 28)),
    "vit_small_patch16_64": (lambda: ViT(64), (2, 3, 64, 64)),
}


def run(name, out_dir):
    make, in_shape = MODELS[name]
    model = make().double().train()
    fill(model)
    g = np.random.default_rng(zlib.crc32(name.encode()))
    x = g.standard_normal(in_shape).astype(np.float32)
    out = model(torch.from_numpy(x).double())
    gout = torch.from_numpy(g.standard_normal(tuple(out.shape)).astype(np.float32)).double()
    out.backward(gout)
    tensors = {"input": x, "output": out.detach().numpy(), "grad_output": gout.numpy()}
    n_params = 0
    for pname, p in model.named_parameters():
        gr = p.grad.detach().reshape(-1)
        n_params += p.numel()
        idx = np.linspace(0, gr.numel() - 1, min(SAMPLES, gr.numel())).astype(np.int64)
        tensors["grad_norm." + pname] = np.array(gr.norm().item())
        tensors["grad_sum." + pname] = np.array(gr.sum().item())
        tensors["grad_sample." + pname] = gr.numpy()[idx]
        tensors["grad_index." + pname] = idx
    meta = {"format_version": FORMAT_VERSION, "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__, "model": name,
            "num_parameters": n_params, "num_tensors": len(model.state_dict())}
    st.save(os.path.join(out_dir, name + ".safetensors"), tensors, meta)
    print(f"gen_models.py: {name}: {n_params} parameters")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(sys.argv[1], exist_ok=True)
    torch.manual_seed(0)
    for name in MODELS:
        run(name, sys.argv[1])


if __name__ == "__main__":
    main()
