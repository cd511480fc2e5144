#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures for siam's op tests.

Usage: gen_ops.py OUT_DIR [--module cases_X] [CASE_NAME ...]

Every module tools/reference/cases_*.py defines CASES, a list of Case. For each case this
writes OUT_DIR/<name>.safetensors with:
  input.i      the inputs (floating inputs are f32 values, stored f32; indices i64)
  output       the op's output, computed by PyTorch in f64 from those inputs
  grad_output  a seeded random upstream gradient (f64, f32-representable)
  grad.i       d(sum(output * grad_output)) / d(input.i) for floating inputs (f64)
and metadata: format_version, torch_version, seed, case. The C++ twin of each case is in
tests/ops_*.cpp under the same name.
"""
import glob
import importlib
import os
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

FORMAT_VERSION = 1


class Case:
    """name: fixture name; inputs: list of input makers (see below); fn: torch function."""

    def __init__(self, name, inputs, fn):
        self.name, self.inputs, self.fn = name, inputs, fn


# Input makers: each takes a numpy Generator and returns an array.
def randn(*shape, scale=1.0):
    return lambda g: (g.standard_normal(shape) * scale).astype(np.float32)


def uniform(lo, hi, *shape):
    return lambda g: g.uniform(lo, hi, shape).astype(np.float32)


def distinct(*shape, spread=1.0):
    """Values pairwise at least spread/n apart (no ties), for max, sort-like ops."""
    def make(g):
        n = int(np.prod(shape))
        v = (np.arange(n) - n / 2 + 0.5) * spread / max(n, 1) * 4
        return g.permutation(v).reshape(shape).astype(np.float32)
    return make


def probs(*shape):
    """Rows (last axis) of positive values summing to 1: soft classification targets."""
    def make(g):
        e = np.exp(g.standard_normal(shape))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return make


def index(high, *shape):
    return lambda g: g.integers(0, high, shape).astype(np.int64)


def const(array):
    return lambda g: np.asarray(array)


def run_case(case, out_dir):
    seed = zlib.crc32(case.name.encode())
    g = np.random.default_rng(seed)
    arrays = [make(g) for make in case.inputs]
    tins = []
    for a in arrays:
        t = torch.from_numpy(np.array(a))
        if t.is_floating_point():
            t = t.double().requires_grad_(True)
        tins.append(t)
    out = case.fn(*tins)
    gout = torch.from_numpy(g.standard_normal(tuple(out.shape)).astype(np.float32)).double()
    tensors = {"output": out.detach().numpy(), "grad_output": gout.numpy()}
    for i, a in enumerate(arrays):
        tensors[f"input.{i}"] = np.array(a)
    if out.requires_grad:
        grads = torch.autograd.grad(out, [t for t in tins if t.requires_grad], gout, allow_unused=True)
        gi = iter(grads)
        for i, t in enumerate(tins):
            if t.requires_grad:
                gr = next(gi)
                tensors[f"grad.{i}"] = (gr if gr is not None else torch.zeros_like(t)).numpy()
    meta = {"format_version": FORMAT_VERSION, "torch_version": torch.__version__, "seed": seed,
            "case": case.name}
    st.save(os.path.join(out_dir, case.name + ".safetensors"), tensors, meta)


def all_cases(only_module=None):
    here = os.path.dirname(os.path.abspath(__file__))
    cases = []
    for path in sorted(glob.glob(os.path.join(here, "cases_*.py"))):
        if only_module and os.path.basename(path)[:-3] != only_module:
            continue
        mod = importlib.import_module(os.path.basename(path)[:-3])
        cases.extend(mod.CASES)
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        sys.exit(f"gen_ops.py: duplicate case names {sorted(dup)}")
    return cases


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_dir, args = sys.argv[1], sys.argv[2:]
    only_module = None
    if args[:1] == ["--module"]:
        if len(args) < 2:
            sys.exit("gen_ops.py: --module needs a module name, e.g. cases_core")
        only_module, args = args[1], args[2:]
    os.makedirs(out_dir, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    wanted = set(args)
    n = 0
    for case in all_cases(only_module):
        if wanted and case.name not in wanted:
            continue
        run_case(case, out_dir)
        n += 1
    print(f"gen_ops.py: wrote {n} fixtures to {out_dir} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
