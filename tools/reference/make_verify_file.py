#!/usr/bin/env python3
"""Writes `siam verify` files from PyTorch (the format: docs/verify.md).

As a library, from any PyTorch code:

    import sys; sys.path.insert(0, "tools/reference")
    import make_verify_file as mv
    mv.write("my_ntxent.safetensors", "loss", "nt_xent", {"temperature": 0.5},
             inputs=[torch.randn(8, 16)], fn=lambda z: my_nt_xent(z, 0.5))
    mv.write("bn.safetensors", "layer", "batch_norm", {}, inputs=[torch.randn(4, 3, 5, 5)],
             module=torch.nn.BatchNorm2d(3))

then `siam verify my_ntxent.safetensors`. `fn` takes the inputs in order; `module` takes
input.0 and contributes its state dict (param.<name>) and parameter gradients
(grad.param.<name>). Inputs listed in `stop_grad` get no gradient (BYOL's targets, DINO's
teacher). Everything is computed in `dtype` (f64 by default: the reference is then exact to
rounding, and siam verifies in f64 with a tight tolerance).

As a command:

    make_verify_file.py OUT_DIR              the examples siam's tests verify
                                             (tests/fixtures/verify, `make reference`)
    make_verify_file.py OUT_DIR --backbones  also torchvision's ResNet-18 (small-input,
                                             grayscale), about 190 MB in f64: not committed
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

FORMAT = "1"


def _np(t):
    t = t.detach().cpu()
    return t.numpy() if t.dtype != torch.bool else t.numpy().astype(bool)


def write(path, kind, name, settings, inputs, fn=None, module=None, grad_output=None, stop_grad=(),
          seed=0, dtype=torch.float64):
    """Runs fn(*inputs) or module(inputs[0]) in PyTorch and writes a verify file to path."""
    if (fn is None) == (module is None):
        raise ValueError("give exactly one of fn and module")
    xs = []
    for i, x in enumerate(inputs):
        x = torch.as_tensor(x)
        if x.is_floating_point():
            x = x.detach().to(dtype).clone().requires_grad_(i not in stop_grad)
        xs.append(x)
    tensors = {f"input.{i}": _np(x) for i, x in enumerate(xs)}
    if module is not None:
        module = module.to(dtype)
        # Before the forward pass: training-mode batch norm updates its running statistics.
        for k, v in module.state_dict().items():
            tensors[f"param.{k}"] = _np(v.clone())
        out = module(xs[0])
    else:
        out = fn(*xs)
    if grad_output is None:
        g = torch.Generator().manual_seed(seed)
        grad_output = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grad_output = torch.as_tensor(grad_output).to(out.dtype)
    if out.requires_grad:
        out.backward(grad_output)
    tensors["output"] = _np(out)
    tensors["grad_output"] = _np(grad_output)
    for i, x in enumerate(xs):
        if x.is_floating_point() and x.grad is not None:
            tensors[f"grad.{i}"] = _np(x.grad)
    if module is not None:
        for k, p in module.named_parameters():
            if p.grad is not None:
                tensors[f"grad.param.{k}"] = _np(p.grad)
    meta = {"siam_verify": FORMAT, "kind": kind, "name": name, "settings": json.dumps(settings),
            "producer": f"torch {torch.__version__}", "dtype": str(dtype).replace("torch.float", "f")}
    st.save(path, tensors, meta)
    return tensors


# ---------------------------------------------------------------- the shipped examples

def _nt_xent(z, temperature):
    """NT-Xent as SimCLR computes it: cosine logits, the anchor itself masked out, cross-entropy
    towards the other view of the same image."""
    z = F.normalize(z, dim=1)
    n = z.shape[0] // 2
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, labels)


def _info_nce(q, k, queue, temperature):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def _cosine_regression(p, z):
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)


def _byol(p1, p2, z1, z2):
    return (_cosine_regression(p1, z2) + _cosine_regression(p2, z1)).mean()


def _simsiam(p1, p2, z1, z2):
    return -(F.cosine_similarity(p1, z2.detach(), dim=-1).mean() + F.cosine_similarity(p2, z1.detach(), dim=-1).mean()) / 2


def _dino(student, teacher, center, crops, student_temp, teacher_temp):
    s = (student / student_temp).chunk(crops)
    t = F.softmax((teacher - center) / teacher_temp, dim=-1).detach().chunk(2)
    total, terms = 0, 0
    for it, q in enumerate(t):
        for v, logp in enumerate(s):
            if v == it:
                continue
            total = total + torch.sum(-q * F.log_softmax(logp, dim=-1), dim=-1).mean()
            terms += 1
    return total / terms


def _vicreg(x, y, sim=25.0, std=25.0, cov=1.0):
    n, d = x.shape
    inv = F.mse_loss(x, y)
    x, y = x - x.mean(0), y - y.mean(0)
    sx, sy = torch.sqrt(x.var(0) + 1e-4), torch.sqrt(y.var(0) + 1e-4)
    var = (F.relu(1 - sx).mean() + F.relu(1 - sy).mean()) / 2
    cx, cy = x.T @ x / (n - 1), y.T @ y / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool)
    covl = cx[off].pow(2).sum() / d + cy[off].pow(2).sum() / d
    return sim * inv + std * var + cov * covl


def _barlow(z1, z2, lambd=0.0051):
    n, d = z1.shape
    bn = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)  # noqa: E731
    c = bn(z1).T @ bn(z2) / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c[~torch.eye(d, dtype=torch.bool)].pow(2).sum()
    return on + lambd * off


def examples(out_dir, backbones=False):
    torch.manual_seed(0)
    r = lambda *s: torch.randn(*s)  # noqa: E731
    os.makedirs(out_dir, exist_ok=True)
    p = lambda n: os.path.join(out_dir, n + ".safetensors")  # noqa: E731
    write(p("loss_nt_xent"), "loss", "nt_xent", {"temperature": 0.5}, [r(8, 16)], fn=lambda z: _nt_xent(z, 0.5))
    write(p("loss_info_nce"), "loss", "info_nce", {"temperature": 0.2},
          [r(4, 16), r(4, 16), F.normalize(r(32, 16), dim=1)], fn=lambda q, k, u: _info_nce(q, k, u, 0.2))
    write(p("loss_byol"), "loss", "byol", {}, [r(6, 16) for _ in range(4)], fn=_byol, stop_grad=(2, 3))
    write(p("loss_simsiam"), "loss", "simsiam", {}, [r(6, 16) for _ in range(4)], fn=_simsiam, stop_grad=(2, 3))
    write(p("loss_dino"), "loss", "dino", {"student_crops": 4, "student_temp": 0.1, "teacher_temp": 0.04},
          [r(12, 20), r(6, 20), 0.1 * r(1, 20)], fn=lambda s, t, c: _dino(s, t, c, 4, 0.1, 0.04), stop_grad=(1, 2))
    write(p("loss_vicreg"), "loss", "vicreg", {}, [r(8, 12), r(8, 12)], fn=_vicreg)
    write(p("loss_barlow_twins"), "loss", "barlow_twins", {"lambda": 0.0051}, [r(8, 12), r(8, 12)], fn=_barlow)
    write(p("op_conv2d"), "op", "conv2d", {"stride": 2, "padding": 1}, [r(2, 3, 7, 7), r(4, 3, 3, 3), r(4)],
          fn=lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1))
    write(p("layer_linear"), "layer", "linear", {}, [r(4, 5)], module=torch.nn.Linear(5, 3))
    write(p("layer_conv2d"), "layer", "conv2d", {"stride": 2, "padding": 1}, [r(2, 3, 6, 6)],
          module=torch.nn.Conv2d(3, 4, 3, stride=2, padding=1))
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    write(p("layer_batch_norm"), "layer", "batch_norm", {}, [r(4, 3, 5, 5)], module=bn)
    ln = torch.nn.LayerNorm(6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
    write(p("layer_layer_norm"), "layer", "layer_norm", {}, [r(3, 4, 6)], module=ln)
    if backbones:
        import torchvision
        m = torchvision.models.resnet18(num_classes=10)
        m.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        m.maxpool = torch.nn.Identity()
        write(p("backbone_resnet18"), "backbone", "resnet18", {"small_input": True}, [r(4, 1, 28, 28)], module=m)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    examples(args[0], backbones="--backbones" in sys.argv)
    print(f"wrote {len(os.listdir(args[0]))} files to {args[0]}")


if __name__ == "__main__":
    main()
