"""Attention (composite reference). C++ twins: tests/ops_attention.cpp."""
import math

import torch

import philox
from gen_ops import Case, randn


def attention(q, k, v, p=0.0, seed=0):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if p > 0:
        u = torch.from_numpy(philox.uniform(seed, 0, w.numel()).reshape(tuple(w.shape))).double()
        w = w * (u >= p).double() / (1 - p)
    return w @ v


CASES = [
    Case("attention", [randn(2, 2, 3, 4), randn(2, 2, 5, 4), randn(2, 2, 5, 3)], attention),
    Case("attention_self_3d", [randn(2, 4, 4)], lambda x: attention(x, x, x)),
    Case("attention_dropout", [randn(1, 2, 3, 4), randn(1, 2, 4, 4), randn(1, 2, 4, 2)],
         lambda q, k, v: attention(q, k, v, 0.3, 99)),
]
