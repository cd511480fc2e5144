"""Views, elementwise ops, activations and reductions. C++ twins: tests/ops_core.cpp."""
import torch
import torch.nn.functional as F

from gen_ops import Case, const, distinct, randn, uniform
import numpy as np

CASES = [
    # views and copies
    Case("view_reshape_noncontig", [randn(3, 4)], lambda x: x.t().reshape(2, 6) * 1.0),
    Case("view_permute", [randn(2, 3, 4)], lambda x: x.permute(2, 0, 1)),
    Case("view_narrow", [randn(4, 5)], lambda x: x.narrow(1, 1, 3)),
    Case("view_slice_step", [randn(3, 7)], lambda x: x[:, 1:6:2]),
    Case("view_select", [randn(3, 4, 2)], lambda x: x.select(1, 2)),
    Case("view_expand", [randn(3, 1)], lambda x: x.expand(2, 3, 4)),
    Case("view_squeeze_unsqueeze", [randn(3, 1, 4)], lambda x: x.squeeze(1).unsqueeze(0)),
    Case("view_flatten", [randn(2, 3, 4)], lambda x: x.transpose(0, 2).flatten(1)),
    # elementwise
    Case("add_broadcast", [randn(4, 3), randn(3)], lambda a, b: a + b),
    Case("add_transposed", [randn(3, 4), randn(4, 3)], lambda a, b: a.t() + b),
    Case("sub_broadcast", [randn(2, 1, 3), randn(4, 1)], lambda a, b: a - b),
    Case("mul_broadcast", [randn(4, 3), randn(4, 1)], lambda a, b: a * b),
    Case("div_broadcast", [randn(3, 4), uniform(0.5, 2.0, 1, 4)], lambda a, b: a / b),
    Case("scalar_affine", [randn(3, 4)], lambda x: x * -1.5 + 2.5),
    Case("neg", [randn(5)], lambda x: -x),
    Case("pow", [uniform(0.5, 2.0, 3, 4)], lambda x: x ** 2.5),
    Case("exp", [randn(3, 4)], torch.exp),
    Case("log", [uniform(0.5, 3.0, 3, 4)], torch.log),
    Case("sqrt", [uniform(0.5, 3.0, 3, 4)], torch.sqrt),
    Case("rsqrt", [uniform(0.5, 3.0, 3, 4)], torch.rsqrt),
    Case("abs", [distinct(3, 4)], torch.abs),
    Case("clamp", [distinct(4, 5)], lambda x: torch.clamp(x, -0.55, 0.65)),
    Case("clamp_min", [distinct(4, 5)], lambda x: torch.clamp(x, min=0.15)),
    Case("maximum", [randn(3, 4), randn(4)], torch.maximum),
    Case("minimum", [randn(3, 4), randn(3, 1)], torch.minimum),
    Case("where", [const(np.array([[True, False, True], [False, False, True]])), randn(2, 3), randn(3)],
         torch.where),
    # activations
    Case("relu", [distinct(4, 5)], torch.relu),
    Case("gelu_erf", [randn(4, 5, scale=2.0)], F.gelu),
    Case("gelu_tanh", [randn(4, 5, scale=2.0)], lambda x: F.gelu(x, approximate="tanh")),
    Case("sigmoid", [randn(4, 5, scale=2.0)], torch.sigmoid),
    Case("tanh", [randn(4, 5, scale=2.0)], torch.tanh),
    # reductions
    Case("sum_all", [randn(3, 4)], lambda x: x.sum()),
    Case("sum_dims_keepdim", [randn(2, 3, 4)], lambda x: x.sum((0, 2), keepdim=True)),
    Case("sum_transposed", [randn(3, 4)], lambda x: x.t().sum(1)),
    Case("mean_dim", [randn(3, 4, 2)], lambda x: x.mean(1)),
    Case("var_unbiased", [randn(3, 5)], lambda x: x.var(1, unbiased=True)),
    Case("var_biased_keepdim", [randn(4, 3)], lambda x: x.var(0, unbiased=False, keepdim=True)),
    Case("max_dim", [distinct(3, 5)], lambda x: x.max(1).values),
    Case("max_dim_keepdim", [distinct(4, 3)], lambda x: x.max(0, keepdim=True).values),
    Case("logsumexp", [randn(3, 5, scale=3.0)], lambda x: torch.logsumexp(x, 1)),
    Case("norm", [randn(3, 4)], lambda x: torch.linalg.vector_norm(x, dim=1)),
]
