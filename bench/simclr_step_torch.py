#!/usr/bin/env python3
"""The PyTorch twin of `siam bench configs/bench/simclr_resnet18_28px.toml`: one SimCLR
training step on the CPU (small-input ResNet-18 on 1x28x28 views, batch 64 pairs, projector
2048-2048-128 with BN, NT-Xent, SGD with momentum), timed the same way (median of >= 10 steps
after a warm-up, on prebuilt batches) and printed as the same JSON line.

    /usr/bin/python3 bench/simclr_step_torch.py [--threads N] [--steps 10] [--warmup 3]

Needs python3-torch and python3-torchvision (scripts/deps.sh reference).
"""
import argparse
import json
import os
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def small_input_resnet18():
    # torchvision's ResNet-18 with siam's small_input stem: 3x3 stride-1 conv, no max-pool, no classifier.
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def projector(dims=(2048, 2048, 128), in_dim=512):
    # SimCLR v2's head as siam builds it: Linear (no bias) -> BN -> ReLU per hidden layer, last Linear -> BN.
    layers = []
    for i, d in enumerate(dims):
        layers += [nn.Linear(in_dim, d, bias=False), nn.BatchNorm1d(d)]
        if i + 1 < len(dims):
            layers.append(nn.ReLU(inplace=True))
        in_dim = d
    return nn.Sequential(*layers)


def nt_xent(z, temperature):
    z = F.normalize(z, dim=1)
    m = z.shape[0]
    s = z @ z.t() / temperature
    s = s.masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
    target = (torch.arange(m) + m // 2) % m
    return F.cross_entropy(s, target)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=0.05, help="per 256 images, as the siam config's base_lr")
    args = ap.parse_args()
    if args.steps < 10:
        ap.error("--steps must be at least 10")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    backbone, head = small_input_resnet18(), projector()
    params = list(backbone.parameters()) + list(head.parameters())
    # The method's parameter groups: biases and norm parameters without weight decay.
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr * args.batch / 256, momentum=0.9)
    batches = [[torch.randn(args.batch, 1, 28, 28) for _ in range(2)] for _ in range(4)]

    times = []
    for s in range(args.warmup + args.steps):
        x1, x2 = batches[s % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        z = head(backbone(torch.cat([x1, x2])))
        loss = nt_xent(z, args.temperature)
        loss.backward()
        opt.step()
        loss.item()
        dt = (time.perf_counter() - t0) * 1000
        if s >= args.warmup:
            times.append(dt)

    med = statistics.median(times)
    print(json.dumps({
        "bench": "pretrain_step", "impl": "pytorch", "method": "simclr", "arch": "resnet18", "device": "cpu",
        "threads": torch.get_num_threads(), "batch": args.batch, "views": 2, "input": [1, 28, 28],
        "warmup": args.warmup, "steps": args.steps, "ms_per_step": med, "ms_min": min(times), "ms_max": max(times),
        "pairs_per_s": args.batch * 1000 / med, "views_per_s": 2 * args.batch * 1000 / med,
        "data_ms_per_batch": None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
