#!/usr/bin/env python3
"""Writes whole-model fixtures: torchvision ResNets, a timm-named ViT-S/16, and a small ViT
run on inputs whose patch grid differs from its position embedding's (interpolated).

Usage: gen_models.py OUT_DIR [MODEL ...]   (no MODEL: all of them)

Weights are not stored: both sides fill every parameter and buffer from the formula in
formula() (tests/test_models.cpp has its twin), so a fixture holds only the input, the
output, the upstream gradient, and per parameter the gradient's L2 norm, sum and 64 evenly
spaced elements. PyTorch runs in f64, in training mode (batch statistics); it also runs in
f32 and records how far that lands from f64, which calibrates the C++ f32 tolerances.
"""
import math
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

FORMAT_VERSION = 1
SAMPLES = 64


def formula(name, shape):
    """Deterministic parameter values, f32-exact, from integer arithmetic only.

    u is a Weyl sequence in [-1, 1) keyed by the name's CRC-32: exact in double on both sides
    (no transcendental function, no rounding that a fused multiply-add could change), and
    as unstructured as a random init, which keeps batch norm well conditioned.
    """
    n = int(np.prod(shape)) if len(shape) else 1
    h = (np.arange(n, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(zlib.crc32(name.encode()))) \
        % np.uint64(1 << 32)
    u = h.astype(np.float64) / 4294967296.0 * 2.0 - 1.0
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        v = np.zeros(n)
    elif leaf == "running_var":
        v = 1.0 + 0.25 * u
    elif leaf == "running_mean":
        v = 0.1 * u
    elif leaf in ("pos_embed", "cls_token"):
        v = 0.02 * u
    elif len(shape) == 1 and leaf == "weight":  # norm layer scale
        v = 1.0 + 0.1 * u
    elif len(shape) == 1:
        v = 0.05 * u
    else:
        v = u * math.sqrt(3.0 / (n // shape[0]))  # variance 1/fan_in
    return v.astype(np.float32).astype(np.float64).reshape(shape)


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
    """timm's VisionTransformer (class token, learned position embedding, pre-norm), same names.

    An input whose patch grid is not the position embedding's gets the embedding's patch part
    resized by bicubic interpolation to the input's grid (DINO's interpolate_pos_encoding, with
    size= as DINOv2 does with interpolate_offset = 0); nn/vit.cpp does the same.
    """

    def __init__(self, image, patch=16, dim=384, depth=12, heads=6, classes=1000):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def pos_embed_for(self, h, w):
        p = self.patch_embed.proj.kernel_size[0]
        gh, gw, g = h // p, w // p, int(math.sqrt(self.pos_embed.shape[1] - 1))
        if (gh, gw) == (g, g):
            return self.pos_embed
        dim = self.pos_embed.shape[2]
        grid = self.pos_embed[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)], 1)

    def forward(self, x):
        pos_embed = self.pos_embed_for(x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def small_resnet18():
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


MODELS = {
    "resnet50": (lambda: torchvision.models.resnet50(), (2, 3, 128, 128)),
    "resnet18_small_gray": (small_resnet18, (4, 1, 28, 28)),
    "vit_small_patch16_64": (lambda: ViT(64), (2, 3, 64, 64)),
    # A ViT-Tiny width (192, 3 heads) with 2 blocks, made for 32 px with patch 4 (an 8x8 grid),
    # run on a smaller input (4x4 grid) and on a non-square one (10x6: one side up, one down).
    "vit_tiny_d2_patch4_32_at_16": (lambda: ViT(32, patch=4, dim=192, depth=2, heads=3, classes=10),
                                    (2, 3, 16, 16)),
    "vit_tiny_d2_patch4_32_at_40x24": (lambda: ViT(32, patch=4, dim=192, depth=2, heads=3, classes=10),
                                       (2, 3, 40, 24)),
}


def forward_backward(name, dtype, x, gout=None, g=None):
    make, _ = MODELS[name]
    model = make().to(dtype).train()
    fill(model)
    out = model(torch.from_numpy(x).to(dtype))
    if gout is None:
        gout = torch.from_numpy(g.standard_normal(tuple(out.shape)).astype(np.float32)).double()
    out.backward(gout.to(dtype))
    grads = {n: p.grad.detach().double().reshape(-1) for n, p in model.named_parameters()}
    return model, out.detach().double(), gout, grads


def run(name, out_dir):
    _, in_shape = MODELS[name]
    g = np.random.default_rng(zlib.crc32(name.encode()))
    x = g.standard_normal(in_shape).astype(np.float32)
    model, out, gout, grads = forward_backward(name, torch.float64, x, g=g)
    tensors = {"input": x, "output": out.numpy(), "grad_output": gout.numpy()}
    n_params = 0
    samples = {}
    for pname, gr in grads.items():
        n_params += gr.numel()
        idx = np.linspace(0, gr.numel() - 1, min(SAMPLES, gr.numel())).astype(np.int64)
        samples[pname] = idx
        tensors["grad_norm." + pname] = np.array(gr.norm().item())
        tensors["grad_sum." + pname] = np.array(gr.sum().item())
        tensors["grad_sample." + pname] = gr.numpy()[idx]
        tensors["grad_index." + pname] = idx
    # How far PyTorch's own f32 run lands from its f64 run, in the metrics the C++ test uses:
    # the test bounds siam's f32 deviation by a multiple of these (deep networks in training
    # mode amplify f32 rounding by orders of magnitude; this measures by how much).
    _, out32, _, grads32 = forward_backward(name, torch.float32, x, gout=gout)
    out_dev = ((out32 - out).abs().max() / out.abs().max()).item()
    grad_dev = 0.0
    for pname, gr in grads.items():
        nrm = gr.norm().item()
        idx = samples[pname]
        grad_dev = max(grad_dev, abs(grads32[pname].norm().item() - nrm) / nrm,
                       (grads32[pname][idx] - gr[idx]).abs().max().item() / nrm)
    meta = {"format_version": FORMAT_VERSION, "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__, "model": name,
            "num_parameters": n_params, "num_tensors": len(model.state_dict()),
            "torch_f32_output_deviation": repr(out_dev), "torch_f32_gradient_deviation": repr(grad_dev)}
    st.save(os.path.join(out_dir, name + ".safetensors"), tensors, meta)
    print(f"gen_models.py: {name}: {n_params} parameters; torch f32 vs f64: output {out_dev:.2e}, "
          f"gradients {grad_dev:.2e}")


def main():
    if len(sys.argv) < 2 or any(n not in MODELS for n in sys.argv[2:]):
        sys.exit(__doc__ + "\nMODEL: " + ", ".join(MODELS))
    os.makedirs(sys.argv[1], exist_ok=True)
    torch.manual_seed(0)
    for name in sys.argv[2:] or MODELS:
        run(name, sys.argv[1])


if __name__ == "__main__":
    main()
