#include "nn/data_parallel.h"

#include <chrono>
#include <unordered_map>

#include "autograd/hooks.h"
#include "autograd/ops.h"

namespace siam::nn {

GradReducer::GradReducer(std::vector<Tensor> params, dist::Group& group, double bucket_mb, bool overlap)
    : params_(std::move(params)), bucket_of_(params_.size(), -1), group_(group), overlap_(overlap) {
  if (!(bucket_mb > 0)) fail("run.bucket_mb must be positive, got ", bucket_mb);
  const double cap = bucket_mb * 1024 * 1024;
  double filled = 0;
  for (int i = static_cast<int>(params_.size()) - 1; i >= 0; --i) {
    const Tensor& p = params_[static_cast<size_t>(i)];
    // A bucket is one flat buffer: one dtype and one device.
    const bool fits = !buckets_.empty() && filled < cap &&
                      params_[static_cast<size_t>(buckets_.back().params.front())].dtype() == p.dtype() &&
                      params_[static_cast<size_t>(buckets_.back().params.front())].device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      filled = 0;
    }
    buckets_.back().params.push_back(i);
    index_[p.impl_ptr().get()] = i;
    bucket_of_[static_cast<size_t>(i)] = static_cast<int>(buckets_.size()) - 1;
    filled += static_cast<double>(p.nbytes());
  }
}

void GradReducer::launch(Bucket& b) {
  NoGradGuard no_grad;
  std::vector<Tensor> flat;
  b.packed.clear();
  for (int i : b.params) {
    const Tensor& g = params_[static_cast<size_t>(i)].grad();
    if (!g.defined()) continue;
    b.packed.push_back(i);
    flat.push_back(reshape(g, {g.numel()}));
  }
  if (b.packed.empty()) return;
  b.flat = contiguous(flat.size() == 1 ? copy_to(flat[0], flat[0].device(), flat[0].dtype()) : cat(flat, 0));
  stats_.bytes += static_cast<int64_t>(b.flat.nbytes());
  ++stats_.buckets;
  b.work = group_.all_reduce_async(b.flat);
}

void GradReducer::on_leaf(const Tensor& leaf) {
  for (Bucket& b : buckets_)  // drive the progress of what is in flight
    if (b.work) b.work->done();
  auto it = index_.find(leaf.impl_ptr().get());
  if (it == index_.end()) return;
  Bucket& b = buckets_[static_cast<size_t>(bucket_of_[static_cast<size_t>(it->second)])];
  if (++b.ready == static_cast<int>(b.params.size()) && overlap_) {
    launch(b);
    if (b.work) ++stats_.overlapped;
  }
}

void GradReducer::backward(const Tensor& loss) {
  using clock = std::chrono::steady_clock;
  stats_ = Stats{};
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.work.reset();
    b.flat = Tensor();
  }
  const auto t0 = clock::now();
  {
    autograd::LeafGradHookScope hook([this](const Tensor& leaf) { on_leaf(leaf); });
    autograd::backward(loss);
  }
  const auto t1 = clock::now();
  for (Bucket& b : buckets_)
    if (!b.work) launch(b);
  NoGradGuard no_grad;
  const double inv = 1.0 / group_.size();
  for (Bucket& b : buckets_) {
    if (!b.work) continue;
    b.work->wait();
    int64_t off = 0;
    for (int i : b.packed) {
      const Tensor& g = params_[static_cast<size_t>(i)].grad();
      copy_(g, mul(reshape(narrow(b.flat, 0, off, g.numel()), g.shape()), inv));
      off += g.numel();
    }
    b.work.reset();
    b.flat = Tensor();
  }
  stats_.backward_s = std::chrono::duration<double>(t1 - t0).count();
  stats_.tail_s = std::chrono::duration<double>(clock::now() - t1).count();
}

}  // namespace siam::nn
