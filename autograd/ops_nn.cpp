// Neural-network ops: normalisation, softmax and losses, joining and indexing, dropout.
// The fused ones (batch/layer norm, softmax, indexing, dropout) call kernels/ directly and
// record a backward kernel; the rest (cross_entropy, normalize, cosine_similarity, stack,
// split) are compositions of differentiable ops and get their backward from them.
#include <algorithm>

#include "autograd/ops.h"
#include "kernels/dropout.h"
#include "kernels/index.h"
#include "kernels/norm.h"
#include "kernels/softmax.h"

namespace siam {

static int64_t wrap(int64_t d, int64_t n, const char* op) {
  int64_t w = d < 0 ? d + n : d;
  if (w < 0 || w >= n) fail(op, ": dimension ", d, " out of range for ", n, " dimensions");
  return w;
}

// detach() of an optional tensor (weight / bias may be undefined).
static Tensor detach_opt(const Tensor& t) { return t.defined() ? detach(t) : Tensor(); }

static bool wants_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

static void require_floating(const Tensor& t, const char* op, const char* what) {
  if (!is_floating(t.dtype())) fail(op, ": ", what, " must be floating point, got ", dtype_name(t.dtype()));
}

// An optional per-feature parameter: undefined, or exactly `shape` and x's dtype.
static void check_param(const Tensor& t, const Shape& shape, DType dtype, const char* op, const char* what) {
  if (!t.defined()) return;
  if (t.shape() != shape)
    fail(op, ": ", what, " must have shape ", shape_str(shape), ", got ", shape_str(t.shape()));
  if (t.dtype() != dtype)
    fail(op, ": ", what, " is ", dtype_name(t.dtype()), " but the input is ", dtype_name(dtype));
}

// ---------------------------------------------------------------- normalisation

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps) {
  if (x.dim() != 2 && x.dim() != 4)
    fail("batch_norm: expected x of shape (N, C) or (N, C, H, W), got ", shape_str(x.shape()));
  require_floating(x, "batch_norm", "x");
  const int64_t c = x.size(1);
  check_param(weight, {c}, x.dtype(), "batch_norm", "weight");
  check_param(bias, {c}, x.dtype(), "batch_norm", "bias");
  check_param(running_mean, {c}, x.dtype(), "batch_norm", "running_mean");
  check_param(running_var, {c}, x.dtype(), "batch_norm", "running_var");
  if (!training && !(running_mean.defined() && running_var.defined()))
    fail("batch_norm: evaluation mode normalises with the running statistics, but running_mean ",
         "or running_var is undefined");
  if (training && x.numel() / std::max<int64_t>(c, 1) < 2)
    fail("batch_norm: training needs more than one value per channel, got input of shape ",
         shape_str(x.shape()));
  kernels::NormForward f =
      kernels::batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps);
  std::array<bool, 3> need{x.requires_grad(), wants_grad(weight), wants_grad(bias)};
  return autograd::record(
      "batch_norm", f.y, {x, weight, bias},
      [x = detach(x), w = detach_opt(weight), mean = f.mean, invstd = f.invstd, training, need](const Tensor& g) {
        kernels::NormBackward b = kernels::batch_norm_backward(g, x, w, mean, invstd, training, need);
        return std::vector<Tensor>{b.dx, b.dweight, b.dbias};
      });
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  require_floating(x, "layer_norm", "x");
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  if (k == 0 || k > x.dim() || !std::equal(normalized_shape.begin(), normalized_shape.end(), x.shape().end() - k))
    fail("layer_norm: normalized_shape ", shape_str(normalized_shape),
         " must be a non-empty suffix of the input shape ", shape_str(x.shape()));
  check_param(weight, normalized_shape, x.dtype(), "layer_norm", "weight");
  check_param(bias, normalized_shape, x.dtype(), "layer_norm", "bias");
  const int64_t d = shape_numel(normalized_shape);
  kernels::NormForward f = kernels::layer_norm_forward(x, d, weight, bias, eps);
  std::array<bool, 3> need{x.requires_grad(), wants_grad(weight), wants_grad(bias)};
  return autograd::record(
      "layer_norm", f.y, {x, weight, bias},
      [x = detach(x), w = detach_opt(weight), mean = f.mean, invstd = f.invstd, d, need,
       ns = normalized_shape](const Tensor& g) {
        kernels::NormBackward b = kernels::layer_norm_backward(g, x, d, w, mean, invstd, need);
        return std::vector<Tensor>{b.dx, need[1] ? reshape(b.dweight, ns) : Tensor(),
                                   need[2] ? reshape(b.dbias, ns) : Tensor()};
      });
}

// ---------------------------------------------------------------- softmax and losses

static Tensor softmax_op(const char* name, const Tensor& x, int64_t dim, bool log) {
  require_floating(x, name, "x");
  const int64_t d = wrap(dim, x.dim(), name);
  Tensor y = kernels::softmax(x, d, log);
  return autograd::record(name, y, {x}, [y = detach(y), d, log](const Tensor& g) {
    return std::vector<Tensor>{kernels::softmax_backward(g, y, d, log)};
  });
}

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_op("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_op("log_softmax", x, dim, true); }

Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing, Reduction reduction) {
  if (logits.dim() != 2) fail("cross_entropy: logits must be (N, K), got ", shape_str(logits.shape()));
  require_floating(logits, "cross_entropy", "logits");
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    fail("cross_entropy: label_smoothing must be in [0, 1], got ", label_smoothing);
  const int64_t n = logits.size(0), k = logits.size(1);
  Tensor logp = log_softmax(logits, 1);
  Tensor loss;  // (N)
  if (target.dtype() == DType::i64) {
    if (target.shape() != Shape{n})
      fail("cross_entropy: class-index target must be (N) = ", shape_str({n}), ", got ",
           shape_str(target.shape()));
    loss = neg(squeeze(gather(logp, 1, unsqueeze(target, 1)), 1));
    // Smoothing mixes the one-hot target with the uniform distribution over K classes.
    if (label_smoothing > 0.0)
      loss = add(mul(loss, 1.0 - label_smoothing), mul(sum(logp, {1}), -label_smoothing / static_cast<double>(k)));
  } else if (is_floating(target.dtype())) {
    if (target.shape() != logits.shape())
      fail("cross_entropy: probability target must have the logits' shape ", shape_str(logits.shape()),
           ", got ", shape_str(target.shape()));
    if (target.dtype() != logits.dtype())
      fail("cross_entropy: probability target is ", dtype_name(target.dtype()), " but the logits are ",
           dtype_name(logits.dtype()));
    Tensor t = label_smoothing > 0.0
                   ? add(mul(target, 1.0 - label_smoothing), label_smoothing / static_cast<double>(k))
                   : target;
    loss = neg(sum(mul(logp, t), {1}));
  } else {
    fail("cross_entropy: target must be i64 class indices or floating probabilities, got ",
         dtype_name(target.dtype()));
  }
  switch (reduction) {
    case Reduction::none: return loss;
    case Reduction::sum: return sum(loss);
    case Reduction::mean: return mean(loss);
  }
  return loss;
}

// ---------------------------------------------------------------- vectors

Tensor normalize(const Tensor& x, int64_t dim, double eps) {
  const int64_t d = wrap(dim, x.dim(), "normalize");
  // max(||x||, eps) as sqrt(max(||x||^2, eps^2)): the same value, but a zero vector's
  // gradient is 0 (as in PyTorch) instead of sqrt's 0 * inf.
  Tensor denom = sqrt(clamp(sum(mul(x, x), {d}, true), eps * eps, std::nullopt));
  return div(x, denom);
}

// max(||x||, eps) along dim (kept). Its backward is g * x / max(||x||, eps): below eps the
// clamp does not stop the gradient, the quirk of PyTorch's cosine_similarity (it clamps the
// norm in place under no_grad), kept so gradients match PyTorch everywhere.
static Tensor clamped_norm(const Tensor& x, int64_t dim, double eps) {
  Tensor n;
  {
    NoGradGuard ng;
    n = clamp(norm(x, {dim}, true), eps, std::nullopt);
  }
  return autograd::record("clamped_norm", n, {x}, [x = detach(x), n = detach(n)](const Tensor& g) {
    return std::vector<Tensor>{mul(x, div(g, n))};
  });
}

Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim, double eps) {
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  const int64_t d = wrap(dim, static_cast<int64_t>(shape.size()), "cosine_similarity");
  Tensor ea = expand(a, shape), eb = expand(b, shape);
  // Normalising each side before the product keeps the result in [-1, 1] (PyTorch's order).
  return sum(mul(div(ea, clamped_norm(ea, d, eps)), div(eb, clamped_norm(eb, d, eps))), {d});
}

// ---------------------------------------------------------------- joining

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) fail("cat: needs at least one tensor");
  const Tensor& first = xs[0];
  const int64_t d = wrap(dim, first.dim(), "cat");
  Shape shape = first.shape();
  shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    if (x.dtype() != first.dtype() || x.device() != first.device())
      fail("cat: tensor ", i, " is ", dtype_name(x.dtype()), " on ", x.device().str(), ", tensor 0 is ",
           dtype_name(first.dtype()), " on ", first.device().str());
    bool fits = x.dim() == first.dim();
    for (int64_t k = 0; fits && k < x.dim(); ++k) fits = k == d || x.shape()[k] == first.shape()[k];
    if (!fits)
      fail("cat: tensor ", i, " has shape ", shape_str(x.shape()), ", which differs from tensor 0's ",
           shape_str(first.shape()), " outside dimension ", d);
    shape[d] += x.shape()[d];
  }
  Tensor out = empty(shape, {first.dtype(), first.device()});
  std::vector<int64_t> starts, lengths;
  int64_t at = 0;
  for (const Tensor& x : xs) {
    copy_(narrow(out, d, at, x.shape()[d]), x);
    starts.push_back(at);
    lengths.push_back(x.shape()[d]);
    at += x.shape()[d];
  }
  return autograd::record("cat", out, xs, [d, starts, lengths](const Tensor& g) {
    std::vector<Tensor> gs;
    for (size_t i = 0; i < starts.size(); ++i) gs.push_back(narrow(g, d, starts[i], lengths[i]));
    return gs;
  });
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) fail("stack: needs at least one tensor");
  const int64_t d = wrap(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> us;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i].shape() != xs[0].shape())
      fail("stack: tensor ", i, " has shape ", shape_str(xs[i].shape()), ", tensor 0 has ",
           shape_str(xs[0].shape()), "; stack needs equal shapes");
    us.push_back(unsqueeze(xs[i], d));
  }
  return cat(us, d);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  const int64_t d = wrap(dim, x.dim(), "split");
  const int64_t n = x.shape()[d];
  if (split_size <= 0 && n > 0) fail("split: split_size must be positive, got ", split_size);
  std::vector<Tensor> parts;
  for (int64_t at = 0; at < n; at += split_size) parts.push_back(narrow(x, d, at, std::min(split_size, n - at)));
  if (parts.empty()) parts.push_back(x);
  return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  if (chunks <= 0) fail("chunk: chunks must be positive, got ", chunks);
  const int64_t d = wrap(dim, x.dim(), "chunk");
  // PyTorch's rule: equal pieces of ceil(n / chunks); there may be fewer than `chunks`.
  return split(x, (x.shape()[d] + chunks - 1) / chunks, d);
}

// ---------------------------------------------------------------- indexing

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  const int64_t d = wrap(dim, x.dim(), "index_select");
  if (index.dim() != 1) fail("index_select: index must be 1-D (K), got ", shape_str(index.shape()));
  Tensor y = kernels::index_select(x, d, index);
  return autograd::record("index_select", y, {x}, [shape = x.shape(), d, index = detach(index)](const Tensor& g) {
    Tensor dx = zeros(shape, {g.dtype(), g.device()});
    kernels::index_add_(dx, d, index, g);
    return std::vector<Tensor>{dx};
  });
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  const int64_t d = wrap(dim, x.dim(), "gather");
  Tensor y = kernels::gather(x, d, index);
  return autograd::record("gather", y, {x}, [shape = x.shape(), d, index = detach(index)](const Tensor& g) {
    Tensor dx = zeros(shape, {g.dtype(), g.device()});
    kernels::scatter_add_(dx, d, index, g);
    return std::vector<Tensor>{dx};
  });
}

// ---------------------------------------------------------------- dropout

static void check_p(double p, const char* op) {
  if (!(p >= 0.0 && p <= 1.0)) fail(op, ": p must be in [0, 1], got ", p);
}

// The mask is a function of (seed, offset), so the backward applies the same kernel to g.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_p(p, "dropout");
  if (!training) return x;
  // Reserved even when p = 0, so the stream position does not depend on p.
  const uint64_t seed = gen.seed(), offset = gen.reserve(static_cast<uint64_t>(x.numel()));
  if (p == 0.0) return x;
  Tensor y = kernels::dropout(x, p, seed, offset);
  return autograd::record("dropout", y, {x}, [p, seed, offset](const Tensor& g) {
    return std::vector<Tensor>{kernels::dropout(g, p, seed, offset)};
  });
}

Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen) {
  check_p(p, "drop_path");
  if (x.dim() == 0) fail("drop_path: x must have a sample dimension (N, ...), got a 0-d tensor");
  if (!training) return x;
  const uint64_t seed = gen.seed(), offset = gen.reserve(static_cast<uint64_t>(x.size(0)));
  if (p == 0.0) return x;
  Tensor y = kernels::drop_path(x, p, seed, offset);
  return autograd::record("drop_path", y, {x}, [p, seed, offset](const Tensor& g) {
    return std::vector<Tensor>{kernels::drop_path(g, p, seed, offset)};
  });
}

}  // namespace siam
