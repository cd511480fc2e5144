#pragma once
// Gradient averaging for data-parallel training (PyTorch DDP's reducer, in small).
//
// The parameters are packed, in reverse registration order (roughly the order backward
// finishes them), into buckets of about `bucket_mb`. backward() runs autograd with a hook on
// the leaf gradients: once every gradient of a bucket is final the bucket is flattened and its
// all-reduce starts, while backward goes on with the layers below. After backward every
// bucket is waited for and each parameter's .grad becomes the mean over ranks, so the
// optimizer, clipping and LARS see the global gradient, the same on every rank.
//
// Parameters without a gradient in a step (frozen for an epoch, unused) stay without one on
// every rank: the ranks run the same graph, so they agree on which ones.
#include <memory>
#include <unordered_map>
#include <vector>

#include "dist/dist.h"
#include "nn/module.h"

namespace siam::nn {

class GradReducer {
 public:
  // group: the channel the gradients travel on (a duplicate of the training group, so the
  // buckets' all-reduces never interleave with sync batch norm's). overlap = false starts every
  // all-reduce after backward instead (for measuring what the overlap hides).
  GradReducer(std::vector<Tensor> params, dist::Group& group, double bucket_mb = 25, bool overlap = true);

  // backward(loss) with the gradients averaged over the ranks on return.
  void backward(const Tensor& loss);

  struct Stats {
    double backward_s = 0;  // autograd, with the overlapped all-reduces started inside it
    double tail_s = 0;      // after autograd: the rest of the all-reduces, and the averaging
    int64_t bytes = 0;      // gradient bytes all-reduced
    int buckets = 0;        // buckets launched
    int overlapped = 0;     // of them, launched while backward ran
  };
  const Stats& last() const { return stats_; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<int> params;  // indices into params_
    int ready = 0;
    std::vector<int> packed;  // the parameters in the launched flat buffer, in order
    Tensor flat;
    std::unique_ptr<dist::Work> work;
  };
  void on_leaf(const Tensor& leaf);
  void launch(Bucket& b);

  std::vector<Tensor> params_;
  std::vector<int> bucket_of_;
  std::unordered_map<const TensorImpl*, int> index_;
  std::vector<Bucket> buckets_;
  dist::Group& group_;
  bool overlap_;
  Stats stats_;
};

}  // namespace siam::nn
