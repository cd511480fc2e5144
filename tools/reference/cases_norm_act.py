"""Fused batch norm + residual add + ReLU: relu(batch_norm(x) + residual).
C++ twins: tests/ops_norm_act.cpp (same names).

The ReLU's mask must not depend on the precision the op runs in (f64 here; f32, bf16 on the
GPU in the CUDA parity suite), so every input set is built with each pre-activation at least
MARGIN away from 0: the residual is moved where needed, or (no residual) x is made of +-u
pairs per channel, so the normalised values are +-u / std exactly."""
import numpy as np
import torch.nn.functional as F

from cases_nn import BN_MEAN, BN_VAR, bn_stats
from gen_ops import Case

MARGIN = 0.25
EPS = 1e-5


def bn_ref(x, w, b, training):
    """batch_norm of x (f64 numpy), as F.batch_norm computes it."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        c = x.shape[1]
        mean, var = np.array(BN_MEAN[:c]), np.array(BN_VAR[:c])
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS)
    if w is not None:
        y = y * w.reshape(shape) + b.reshape(shape)
    return y


def inputs_with_residual(shape, affine, training):
    """x, (w, b,) residual with |bn(x) + residual| >= MARGIN everywhere."""
    def make_all(g):
        c = shape[1]
        x = g.uniform(-2, 1, shape).astype(np.float32)
        w = g.standard_normal(c).astype(np.float32) if affine else None
        b = g.standard_normal(c).astype(np.float32) if affine else None
        r = g.standard_normal(shape)
        bn = bn_ref(x.astype(np.float64), None if w is None else w.astype(np.float64),
                    None if b is None else b.astype(np.float64), training)
        z = bn + r
        r = np.where(np.abs(z) < MARGIN, np.where(z < 0, -MARGIN, MARGIN) * 2 - bn, r).astype(np.float32)
        return [x] + ([w, b] if affine else []) + [r]
    return shared_makers(make_all, 4 if affine else 2)


def inputs_pairs(shape):
    """x whose every channel is a shuffled set of +-u pairs (|u| >= 2 MARGIN): bn(x) = +-u / std."""
    def make_all(g):
        n = int(np.prod(shape)) // shape[1]
        cols = []
        for _ in range(shape[1]):
            u = g.uniform(2 * MARGIN, 2.0, n // 2)
            cols.append(g.permutation(np.concatenate([u, -u])) * g.uniform(0.5, 2.0) + g.uniform(-1, 1))
        x = np.stack(cols, axis=1)  # (n, C): values of channel c in column c
        x = x.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))
        x = np.moveaxis(x, -1, 1)
        return [np.ascontiguousarray(x, dtype=np.float32)]
    return shared_makers(make_all, 1)


def shared_makers(make_all, n):
    """n input makers drawing from one make_all(g) call (gen_ops calls makers in order)."""
    state = {}

    def first(g):
        state["arrays"] = make_all(g)
        return state["arrays"][0]
    return [first] + [lambda g, i=i: state["arrays"][i] for i in range(1, n)]


def bn_act(training, relu):
    def fn(x, *rest):
        w, b, r = (rest[0], rest[1], rest[2]) if len(rest) == 3 else (None, None, rest[0] if rest else None)
        rm, rv = bn_stats(x.shape[1])
        y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.1, eps=EPS)
        if r is not None:
            y = y + r
        return F.relu(y) if relu else y
    return fn


CASES = [
    Case("batch_norm_relu_add_train", inputs_with_residual((4, 3, 2, 3), True, True), bn_act(True, True)),
    Case("batch_norm_relu_add_eval", inputs_with_residual((3, 3, 2, 2), True, False), bn_act(False, True)),
    Case("batch_norm_relu_add_2d_no_affine", inputs_with_residual((6, 3), False, True), bn_act(True, True)),
    Case("batch_norm_relu_train_pairs", inputs_pairs((4, 3, 2, 2)), bn_act(True, True)),
    Case("batch_norm_add_train_no_relu", inputs_with_residual((5, 3, 2, 2), True, True), bn_act(True, False)),
]
