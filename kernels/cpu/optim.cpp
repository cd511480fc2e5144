// Optimizer and EMA updates on the CPU. Every kernel overwrites (=) its parameters and
// state (momentum buffers, moments, EMA targets) in place; gradients and sources are only
// read. The arithmetic follows PyTorch's sequence of in-place ops step by step, with the
// hyper-parameters rounded to the tensor's dtype as PyTorch rounds its scalar arguments, so
// an f32 run tracks torch.optim in f32 and an f64 run matches it to rounding. Every argument
// is validated before the first element moves, so a rejected call changes nothing.
#include "kernels/optim.h"

#include <cmath>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/optim.h"

namespace siam::kernels {

// Below this many elements one thread is faster than waking the team.
constexpr int64_t kParallelMin = 1 << 15;

static void check_list(const char* name, const std::vector<Tensor>& params, const std::vector<Tensor>& other,
                       const char* what) {
  if (other.size() != params.size())
    fail(name, ": ", params.size(), " parameters but ", other.size(), " ", what);
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    const Tensor& o = other[i];
    if (o.shape() != p.shape() || o.dtype() != p.dtype() || o.device() != p.device())
      fail(name, ": ", what, " ", i, " is ", shape_str(o.shape()), " ", dtype_name(o.dtype()), " on ",
           o.device().str(), ", its parameter is ", shape_str(p.shape()), " ", dtype_name(p.dtype()), " on ",
           p.device().str());
    if (!o.is_contiguous()) fail(name, ": ", what, " ", i, " is not contiguous");
  }
}

static void check_params(const char* name, const std::vector<Tensor>& params) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    if (!p.device().is_cpu())
      fail(name, ": parameter ", i, " is on ", p.device().str(), ", parameter 0 on cpu",
           "; one update takes the parameters of one device");
    if (!p.is_contiguous()) fail(name, ": parameter ", i, " ", shape_str(p.shape()), " is not contiguous");
    if (p.dtype() != DType::f32 && p.dtype() != DType::f64)
      fail(name, ": parameter ", i, " is ", dtype_name(p.dtype()), ", expected f32 or f64 (bf16 training keeps f32 master weights)");
  }
}

// One parameter of each update, as a template: OpenMP pragmas cannot sit inside the dtype
// dispatch macro's lambda.
template <class T>
static void sgd_one(const Tensor& param, const Tensor& grad, const Tensor* buffer, const SgdHyper& h) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* buf = buffer ? buffer->data<T>() : nullptr;
  const T wd = T(h.weight_decay), m = T(h.momentum), neg_lr = T(-h.lr);
  const bool nesterov = h.nesterov;
  const int64_t n = param.numel();
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t k = 0; k < n; ++k) {
    T d = g[k] + wd * p[k];
    if (buf) {
      buf[k] = buf[k] * m + d;
      d = nesterov ? d + m * buf[k] : buf[k];
    }
    p[k] = p[k] + neg_lr * d;
  }
}

template <class T>
static void lars_one(const Tensor& param, const Tensor& grad, const Tensor& buffer, const LarsHyper& h) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* buf = buffer.data<T>();
  const T wd = T(h.weight_decay), m = T(h.momentum), neg_lr = T(-h.lr);
  const int64_t n = param.numel();
  // The trust ratio needs both norms before any element moves: a reduction pass first.
  T q = T(1);
  if (h.adapt) {
    double pp = 0, dd = 0;
#pragma omp parallel for reduction(+ : pp, dd) if (n > kParallelMin)
    for (int64_t k = 0; k < n; ++k) {
      T d = g[k] + wd * p[k];
      pp += double(p[k]) * double(p[k]);
      dd += double(d) * double(d);
    }
    T pn = T(std::sqrt(pp)), dn = T(std::sqrt(dd));
    if (pn > T(0) && dn > T(0)) q = T(h.eta) * pn / dn;
  }
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t k = 0; k < n; ++k) {
    T d = (g[k] + wd * p[k]) * q;
    buf[k] = buf[k] * m + d;
    p[k] = p[k] + neg_lr * buf[k];
  }
}

template <class T>
static void adamw_one(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                      int64_t step, const AdamWHyper& h) {
  // Bias corrections in double on the host, as torch.optim does with Python floats.
  const double t = double(step);
  const double step_size = h.lr / (1 - std::pow(h.beta1, t));
  const double bc2_sqrt = std::sqrt(1 - std::pow(h.beta2, t));
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* m = exp_avg.data<T>();
  T* v = exp_avg_sq.data<T>();
  const T decay = T(1 - h.lr * h.weight_decay), b1 = T(h.beta1), b2 = T(h.beta2);
  const T one_b1 = T(1 - h.beta1), one_b2 = T(1 - h.beta2);
  const T bc2 = T(bc2_sqrt), eps = T(h.eps), neg_step = T(-step_size);
  const int64_t n = param.numel();
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t k = 0; k < n; ++k) {
    p[k] = p[k] * decay;
    m[k] = m[k] * b1 + one_b1 * g[k];
    v[k] = v[k] * b2 + one_b2 * g[k] * g[k];
    T denom = std::sqrt(v[k]) / bc2 + eps;
    p[k] = p[k] + neg_step * (m[k] / denom);
  }
}

template <class T>
static void ema_one(const Tensor& target, const Tensor& source, double m) {
  T* t = target.data<T>();
  const T* s = source.data<T>();
  const T mm = T(m), one_m = T(1 - m);
  const int64_t n = target.numel();
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t k = 0; k < n; ++k) t[k] = t[k] * mm + one_m * s[k];
}

void sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& bufs, const SgdHyper& h) {
  if (!params.empty()) SIAM_ON_CUDA(params[0], gpu::sgd_update(params, grads, bufs, h));
  check_params("sgd", params);
  check_list("sgd", params, grads, "gradients");
  const bool momentum = h.momentum != 0;
  if (momentum) check_list("sgd", params, bufs, "momentum buffers");
  for (size_t i = 0; i < params.size(); ++i)
    SIAM_DISPATCH_FLOAT(params[i].dtype(), "sgd",
                        [&] { sgd_one<scalar_t>(params[i], grads[i], momentum ? &bufs[i] : nullptr, h); });
}

void lars_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 const std::vector<Tensor>& bufs, const LarsHyper& h) {
  if (!params.empty()) SIAM_ON_CUDA(params[0], gpu::lars_update(params, grads, bufs, h));
  check_params("lars", params);
  check_list("lars", params, grads, "gradients");
  check_list("lars", params, bufs, "momentum buffers");
  for (size_t i = 0; i < params.size(); ++i)
    SIAM_DISPATCH_FLOAT(params[i].dtype(), "lars", [&] { lars_one<scalar_t>(params[i], grads[i], bufs[i], h); });
}

void adamw_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                  const std::vector<int64_t>& steps, const AdamWHyper& h) {
  if (!params.empty()) SIAM_ON_CUDA(params[0], gpu::adamw_update(params, grads, exp_avgs, exp_avg_sqs, steps, h));
  check_params("adamw", params);
  check_list("adamw", params, grads, "gradients");
  check_list("adamw", params, exp_avgs, "first moments");
  check_list("adamw", params, exp_avg_sqs, "second moments");
  SIAM_CHECK(steps.size() == params.size(), "adamw: ", steps.size(), " step counts for ", params.size(),
             " parameters");
  for (int64_t s : steps) SIAM_CHECK(s >= 1, "adamw: step count ", s);
  for (size_t i = 0; i < params.size(); ++i)
    SIAM_DISPATCH_FLOAT(params[i].dtype(), "adamw",
                        [&] { adamw_one<scalar_t>(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], steps[i], h); });
}

void ema_update(const std::vector<Tensor>& targets, const std::vector<Tensor>& sources, double m) {
  if (!targets.empty()) SIAM_ON_CUDA(targets[0], gpu::ema_update(targets, sources, m));
  check_params("ema", targets);
  check_list("ema", targets, sources, "sources");
  for (size_t i = 0; i < targets.size(); ++i)
    SIAM_DISPATCH_FLOAT(targets[i].dtype(), "ema", [&] { ema_one<scalar_t>(targets[i], sources[i], m); });
}

}  // namespace siam::kernels
