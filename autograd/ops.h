#pragma once
// Every differentiable op of siam: forward through kernels/, backward recorded on the tape.
// nn/ and ssl/ are written against these functions only. Shapes follow PyTorch's
// conventions; a negative dim counts from the end. Broadcasting follows NumPy rules.
#include <array>
#include <optional>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "kernels/optim.h"
#include "tensor/rng.h"

namespace siam {

// ---------------------------------------------------------------- views and copies
Tensor view(const Tensor& x, Shape shape);      // needs compatible strides; one dim may be -1
Tensor reshape(const Tensor& x, Shape shape);   // a view when possible, else a copy
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor expand(const Tensor& x, const Shape& shape);  // -1 keeps a size
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor contiguous(const Tensor& x);  // x itself when already contiguous
Tensor clone(const Tensor& x);       // always a new contiguous tensor
Tensor to(const Tensor& x, Device device);
Tensor to(const Tensor& x, DType dtype);
// Sums `g` over broadcast dimensions so it has `shape` (the backward of broadcasting).
Tensor sum_to(const Tensor& g, const Shape& shape);
// The broadcast shape of a and b; throws siam::Error naming both shapes when incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b);

// ---------------------------------------------------------------- elementwise
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor neg(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi);
Tensor maximum(const Tensor& a, const Tensor& b);  // ties send the gradient half to each
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // cond: bool, broadcast
// Comparisons (no gradient): bool tensors.
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return add(a, -b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return mul(a, 1.0 / b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }

// In place, no autograd (optimizers, gradient accumulation). a += b (b broadcast to a).
void add_(const Tensor& a, const Tensor& b, double alpha = 1.0);
void mul_(const Tensor& a, double s);

// ---------------------------------------------------------------- activations
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x, bool tanh_approximation = false);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);

// ---------------------------------------------------------------- reductions
// Empty `dims` reduces over every dimension.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, const std::vector<int64_t>& dims, bool unbiased = true, bool keepdim = false);
// Max over one dim: (values, i64 indices). The gradient goes to the first maximal index.
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);
// Top-k of each row of a 2-D x (R, N): (values (R, k), i64 indices (R, k)), best first; equal
// values rank the lower column first, NaN counts as -inf. Not differentiable: an input that
// needs a gradient (with grad mode on) is an error.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k);
Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor norm(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);  // L2

// ---------------------------------------------------------------- linear algebra
// matmul: 1-D and 2-D as in PyTorch; N-D batched with broadcast batch dimensions.
Tensor matmul(const Tensor& a, const Tensor& b);
// linear: x (..., in), weight (out, in), bias (out) or undefined -> (..., out)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---------------------------------------------------------------- convolution, pooling, resize
struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
};
// x (N, C, H, W), weight (O, C/groups, kH, kW), bias (O) or undefined -> (N, O, Ho, Wo)
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p);
// x (N, C, H, W); padding is implicit -inf (max) or zero-padding counted (avg, count_include_pad)
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding = 0);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding = 0);
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// x (N, C, H, W) -> (N, C, out_h, out_w); PyTorch's interpolate semantics.
Tensor interpolate_bilinear(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners = false);
Tensor interpolate_bicubic(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners = false);

// ---------------------------------------------------------------- normalisation
// x (N, C) or (N, C, H, W). Training: batch statistics; running stats (if defined) are updated
// in place with `momentum` (unbiased variance), as PyTorch does. Eval: running stats.
// weight/bias (C) or undefined (affine off).
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                  double eps = 1e-5);
// Fused batch norm + residual add + ReLU (ResNet's block tail): relu(batch_norm(x) + residual),
// with batch_norm as above. residual: x's shape, or undefined (no add); relu = false: no ReLU.
// One pass over memory forward and two backward instead of three ops' worth.
Tensor batch_norm_act(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& weight, const Tensor& bias, const Tensor& residual, bool relu,
                      bool training, double momentum = 0.1, double eps = 1e-5);
// Normalises over the last normalized_shape.size() dims; weight/bias of that shape or undefined.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps = 1e-5);

// ---------------------------------------------------------------- softmax and losses
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
enum class Reduction { none, mean, sum };
// logits (N, K); target: i64 class indices (N) or soft probabilities (N, K) (floating).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing = 0.0,
                     Reduction reduction = Reduction::mean);

// ---------------------------------------------------------------- vectors, joining, indexing
Tensor normalize(const Tensor& x, int64_t dim = -1, double eps = 1e-12);  // x / max(||x||, eps)
Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim = -1, double eps = 1e-8);
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);  // index: i64 (K)
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);        // index: i64, x's rank

// ---------------------------------------------------------------- attention and dropout
// q (N, H, Lq, D), k (N, H, Lk, D), v (N, H, Lk, Dv) -> (N, H, Lq, Dv); scale 1/sqrt(D).
// Dropout on the attention weights with probability dropout_p, drawn from `gen`.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    double dropout_p = 0.0, Generator* gen = nullptr);
// Zeroes each element with probability p and scales the rest by 1/(1-p). Element i keeps
// when philox_uniform(seed, offset, i) >= p (the offset reserved from `gen`).
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
// Per-sample (dim 0) version of dropout for residual branches (stochastic depth).
Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen);

// ---------------------------------------------------------------- fused SSL losses
// NT-Xent over z (M, D) (normalised inside), temperature, and an optional bool (M, M) mask of
// positives (default: i <-> (i + M/2) mod M). ssl/losses.h documents the formula.
Tensor nt_xent_fused(const Tensor& z, double temperature, const Tensor& positives);
// DINO's loss: student (crops B, K) logits, teacher (T B, K) logits and centre (K); ssl/losses.h.
Tensor dino_loss_fused(const Tensor& student, const Tensor& teacher, const Tensor& center, int64_t crops,
                       double student_temp, double teacher_temp);
// MoCo's InfoNCE: q, k (N, D), queue (K, D); gradients for every input that requires one.
Tensor info_nce_fused(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature);
// BYOL (byol = true: sum of 2 - 2 cos) or SimSiam (-1/2 sum of mean cos) regression of the
// predictions p1, p2 onto the stop-gradient targets z2, z1 (N, D); ssl/losses.h.
Tensor cosine_regression_fused(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2, bool byol);
// VICReg on x, y (N, D): {loss, invariance, variance, covariance}, each differentiable.
std::array<Tensor, 4> vicreg_loss_fused(const Tensor& x, const Tensor& y, double sim_coeff, double std_coeff,
                                        double cov_coeff);
// Barlow Twins on z1, z2 (N, D): {loss, on_diag, off_diag}, each differentiable.
std::array<Tensor, 3> barlow_loss_fused(const Tensor& z1, const Tensor& z2, double lambda);

// ---------------------------------------------------------------- fused optimizer updates
// In place over lists of parameters, no autograd; the kernels/optim.h contracts.
using kernels::AdamWHyper;
using kernels::LarsHyper;
using kernels::SgdHyper;
using kernels::adamw_update;
using kernels::ema_update;
using kernels::lars_update;
using kernels::sgd_update;

}  // namespace siam
