#!/usr/bin/env python3
"""Writes the PyTorch reference runs for siam's optimizer tests (tests/test_optim.cpp).

Usage: gen_optim.py OUT_DIR

The problem: a 2-layer MLP, out = linear2(relu(linear1(x))), x (8, 5), hidden 6, out 3, loss
mean((out - y)^2) on one fixed batch, trained 20 steps with the learning rate from a per-step
linear warm-up + cosine schedule (DINO's cosine_scheduler). Three runs, one file each:
  sgd.safetensors    torch.optim.SGD, momentum 0.9, Nesterov, weight decay; the second layer's
                     weight in a fixed-lr group (as SimSiam's predictor)
  lars.safetensors   the LARS of SimCLR / BYOL / Barlow Twins (written below, Barlow Twins'
                     code); biases in a group excluded from weight decay and adaptation
  adamw.safetensors  torch.optim.AdamW; weight decay cosine 0.04 -> 0.4 (DINO) on the weights,
                     none on biases; total gradient norm clipped to 0.5 before every step
Every file holds x, y, init.<param>, final.<param>, loss (20: the loss before each step),
lr (20: the schedule's value at each step), and for AdamW wd (20) and grad_norm (20: what
clip_grad_norm_ returned); metadata format_version, torch_version, optimizer. Initial values
are f32-representable; PyTorch computes in f64, so siam's f64 run must agree to rounding.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

FORMAT_VERSION = 1
STEPS = 20
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias"]


def cosine_schedule(base, final, total, warmup=0, start=0.0):
    """DINO's cosine_scheduler with one step per iteration."""
    warm = np.linspace(start, base, warmup)
    iters = np.arange(total - warmup)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warm, cos))


class LARS(torch.optim.Optimizer):
    """Barlow Twins' LARS; a group with exclude=True gets neither weight decay nor adaptation."""

    def __init__(self, params, lr, weight_decay=0, momentum=0.9, eta=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta,
                                      exclude=False))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if not g["exclude"]:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.,
                                    torch.where(update_norm > 0, (g["eta"] * param_norm / update_norm), one),
                                    one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def problem():
    g = np.random.default_rng(20240611)
    x = g.standard_normal((8, 5)).astype(np.float32)
    y = g.standard_normal((8, 3)).astype(np.float32)
    init = {"0.weight": (g.standard_normal((6, 5)) * 0.5).astype(np.float32),
            "0.bias": (g.standard_normal(6) * 0.1).astype(np.float32),
            "2.weight": (g.standard_normal((3, 6)) * 0.5).astype(np.float32),
            "2.bias": (g.standard_normal(3) * 0.1).astype(np.float32)}
    return x, y, init


def run(make_opt, lr_sched, wd_sched=None, clip=None):
    x, y, init = problem()
    params = {n: torch.tensor(init[n], dtype=torch.float64, requires_grad=True) for n in NAMES}
    opt = make_opt(params)
    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    losses, norms = [], []
    for k in range(STEPS):
        for grp in opt.param_groups:
            if not grp.get("fixed_lr", False):
                grp["lr"] = lr_sched[k] * grp.get("lr_scale", 1.0)
            if wd_sched is not None and not grp.get("exclude", False):
                grp["weight_decay"] = wd_sched[k]
        opt.zero_grad()
        h = torch.relu(tx @ params["0.weight"].T + params["0.bias"])
        out = h @ params["2.weight"].T + params["2.bias"]
        loss = ((out - ty) ** 2).mean()
        loss.backward()
        if clip is not None:
            norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), clip).item())
        opt.step()
        losses.append(loss.item())
    tensors = {"x": x, "y": y, "loss": np.array(losses), "lr": np.asarray(lr_sched, dtype=np.float64)}
    for n in NAMES:
        tensors["init." + n] = init[n]
        tensors["final." + n] = params[n].detach().numpy()
    if wd_sched is not None:
        tensors["wd"] = np.asarray(wd_sched, dtype=np.float64)
    if clip is not None:
        tensors["grad_norm"] = np.array(norms)
    return tensors


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    runs = {
        "sgd": run(lambda p: torch.optim.SGD(
            [{"params": [p["0.weight"], p["0.bias"], p["2.bias"]], "weight_decay": 5e-3},
             {"params": [p["2.weight"]], "weight_decay": 5e-3, "lr": 0.05, "fixed_lr": True}],
            lr=0.2, momentum=0.9, nesterov=True),
            cosine_schedule(0.2, 0.002, STEPS, warmup=5, start=0.02)),
        "lars": run(lambda p: LARS(
            [{"params": [p["0.weight"], p["2.weight"]], "weight_decay": 1e-2},
             {"params": [p["0.bias"], p["2.bias"]], "weight_decay": 0.0, "exclude": True, "lr_scale": 0.024}],
            lr=2.0, momentum=0.9, eta=0.001),
            cosine_schedule(2.0, 0.02, STEPS, warmup=5, start=0.2)),
        "adamw": run(lambda p: torch.optim.AdamW(
            [{"params": [p["0.weight"], p["2.weight"]], "weight_decay": 0.04},
             {"params": [p["0.bias"], p["2.bias"]], "weight_decay": 0.0, "exclude": True}],
            lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
            cosine_schedule(1e-2, 1e-4, STEPS, warmup=5), wd_sched=cosine_schedule(0.04, 0.4, STEPS), clip=0.5),
    }
    for name, tensors in runs.items():
        meta = {"format_version": FORMAT_VERSION, "torch_version": torch.__version__, "optimizer": name}
        st.save(os.path.join(out_dir, name + ".safetensors"), tensors, meta)
    print(f"gen_optim.py: wrote {len(runs)} fixtures to {out_dir} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
