"""Normalisation, softmax and losses, vectors, joining, indexing, dropout.
C++ twins: tests/ops_nn.cpp (same names)."""
import numpy as np
import torch
import torch.nn.functional as F

import philox
from gen_ops import Case, const, index, probs, randn, uniform

# Running statistics the batch-norm cases start from (created inside each call, as in C++).
BN_MEAN = [0.25, -0.5, 1.0]
BN_VAR = [0.5, 2.0, 1.25]


def bn_stats(c):
    return (torch.tensor(BN_MEAN[:c], dtype=torch.float64), torch.tensor(BN_VAR[:c], dtype=torch.float64))


def bn_train(x, w=None, b=None):
    rm, rv = bn_stats(x.shape[1])
    return F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)


def bn_eval(x, w=None, b=None):
    rm, rv = bn_stats(x.shape[1])
    return F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5)


def bn_running_update(x1, x2):
    """Running stats after two training steps (momentum 0.1, then 0.3), stacked (2, C).
    No C++ table twin: the plain test BatchNorm.RunningStatsMatchPyTorch reads it."""
    rm, rv = bn_stats(x1.shape[1])
    F.batch_norm(x1, rm, rv, training=True, momentum=0.1, eps=1e-5)
    F.batch_norm(x2, rm, rv, training=True, momentum=0.3, eps=1e-5)
    return torch.stack([rm, rv])


# Dropout: the mask comes from siam's Philox stream (tools/reference/philox.py), so these
# fixtures check the stream as well as the op. The C++ cases reserve the same words first.
DROP_SEED = 0x5EED00001234  # wider than 32 bits: exercises both key words


def philox_keep(seed, offset, n, p):
    return torch.from_numpy(philox.uniform(seed, offset, n).astype(np.float64) >= p)


def dropout_ref(x, p, seed, offset):
    keep = philox_keep(seed, offset, x.numel(), p).reshape(x.shape)
    return x * keep * (1.0 / (1.0 - p))


def drop_path_ref(x, p, seed, offset):
    keep = philox_keep(seed, offset, x.shape[0], p).reshape((-1,) + (1,) * (x.dim() - 1))
    return x * keep * (1.0 / (1.0 - p))


CASES = [
    # batch norm (running stats created per call; training updates them, eval reads them)
    Case("batch_norm_2d_train", [uniform(-1, 3, 6, 3), randn(3), randn(3)], bn_train),
    Case("batch_norm_4d_train", [uniform(-2, 1, 4, 3, 2, 3), randn(3), randn(3)], bn_train),
    Case("batch_norm_train_no_affine", [randn(5, 3, scale=2.0)], bn_train),
    Case("batch_norm_4d_eval", [randn(3, 3, 2, 2), randn(3), randn(3)], bn_eval),
    Case("batch_norm_2d_eval_no_affine", [randn(4, 3)], bn_eval),
    Case("batch_norm_running_update", [uniform(-1, 3, 4, 3, 2, 2), randn(5, 3, 1, 2, scale=2.0)],
         bn_running_update),
    # layer norm
    Case("layer_norm_last", [uniform(-1, 2, 4, 5), randn(5), randn(5)],
         lambda x, w, b: F.layer_norm(x, (5,), w, b, eps=1e-5)),
    Case("layer_norm_last2", [randn(2, 3, 4), randn(3, 4), randn(3, 4)],
         lambda x, w, b: F.layer_norm(x, (3, 4), w, b, eps=1e-5)),
    Case("layer_norm_last_no_affine", [randn(3, 6, scale=3.0)], lambda x: F.layer_norm(x, (6,), eps=1e-5)),
    Case("layer_norm_last2_no_affine", [randn(2, 3, 4)], lambda x: F.layer_norm(x, (3, 4), eps=1e-5)),
    # softmax
    Case("softmax_dim1", [randn(3, 5, scale=2.0)], lambda x: F.softmax(x, 1)),
    Case("softmax_dim0", [randn(4, 3, scale=2.0)], lambda x: F.softmax(x, 0)),
    Case("softmax_transposed", [randn(5, 3, scale=2.0)], lambda x: F.softmax(x.t(), 1)),
    Case("softmax_middle_dim", [randn(2, 4, 3, scale=2.0)], lambda x: F.softmax(x, 1)),
    Case("log_softmax_dim1", [randn(3, 5, scale=2.0)], lambda x: F.log_softmax(x, 1)),
    Case("log_softmax_dim0", [randn(4, 3, scale=2.0)], lambda x: F.log_softmax(x, 0)),
    Case("log_softmax_transposed", [randn(5, 3, scale=2.0)], lambda x: F.log_softmax(x.t(), 1)),
    # cross entropy
    Case("cross_entropy_index_mean", [randn(5, 4, scale=2.0), index(4, 5)],
         lambda x, t: F.cross_entropy(x, t)),
    Case("cross_entropy_index_sum", [randn(5, 4, scale=2.0), index(4, 5)],
         lambda x, t: F.cross_entropy(x, t, reduction="sum")),
    Case("cross_entropy_index_none", [randn(5, 4, scale=2.0), index(4, 5)],
         lambda x, t: F.cross_entropy(x, t, reduction="none")),
    Case("cross_entropy_label_smoothing", [randn(5, 4, scale=2.0), index(4, 5)],
         lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1)),
    Case("cross_entropy_soft", [randn(5, 4, scale=2.0), probs(5, 4)], lambda x, t: F.cross_entropy(x, t)),
    Case("cross_entropy_soft_smoothing_sum", [randn(5, 4, scale=2.0), probs(5, 4)],
         lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1, reduction="sum")),
    # vectors
    Case("normalize_dim1", [randn(3, 4)], lambda x: F.normalize(x, dim=1)),
    Case("normalize_dim0", [randn(4, 3)], lambda x: F.normalize(x, dim=0)),
    Case("cosine_similarity", [randn(3, 5), randn(3, 5)], lambda a, b: F.cosine_similarity(a, b, dim=1)),
    Case("cosine_similarity_broadcast", [randn(4, 3), randn(1, 3)],
         lambda a, b: F.cosine_similarity(a, b, dim=-1)),
    # joining (split/chunk pieces are scaled differently so each piece's gradient is distinct)
    Case("cat_dim1", [randn(2, 3), randn(2, 1), randn(2, 2)], lambda a, b, c: torch.cat([a, b, c], 1)),
    Case("stack_dim0", [randn(2, 3), randn(2, 3), randn(2, 3)], lambda a, b, c: torch.stack([a, b, c], 0)),
    Case("stack_dim2", [randn(2, 3), randn(2, 3)], lambda a, b: torch.stack([a, b], 2)),
    Case("split_scaled", [randn(7, 3)],
         lambda x: torch.cat([p * (i + 1) for i, p in enumerate(torch.split(x, 3, 0))], 0)),
    Case("chunk_scaled", [randn(2, 7)],
         lambda x: torch.cat([p * (i + 1) for i, p in enumerate(torch.chunk(x, 3, 1))], 1)),
    # indexing (repeated indices: the backward must add, not overwrite)
    Case("index_select_repeated", [randn(4, 3), const(np.array([2, 0, 2, 3, 2], dtype=np.int64))],
         lambda x, i: torch.index_select(x, 0, i)),
    Case("index_select_middle", [randn(2, 4, 3), const(np.array([3, 1, 3], dtype=np.int64))],
         lambda x, i: torch.index_select(x, 1, i)),
    Case("gather_dim1", [randn(3, 4), index(4, 3, 5)], lambda x, i: torch.gather(x, 1, i)),
    Case("gather_dim0_smaller", [randn(4, 3), index(4, 2, 2)], lambda x, i: torch.gather(x, 0, i)),
    # dropout (Generator(seed) with words reserved first: dropout at offset 3, drop_path at 2)
    Case("dropout_train", [randn(4, 6)], lambda x: dropout_ref(x, 0.3, DROP_SEED, 3)),
    Case("drop_path_train", [randn(8, 2, 3)], lambda x: drop_path_ref(x, 0.25, DROP_SEED + 1, 2)),
    Case("dropout_eval", [randn(3, 4)], lambda x: F.dropout(x, 0.3, training=False)),
]
