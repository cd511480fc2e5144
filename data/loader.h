#pragma once
// The CPU loader: turns a pair generator's plans into batches of f32 views. Deterministic by
// seed (a batch depends only on the generator's seed, the epoch and the batch number, not on
// timing or thread count), reshuffled every epoch, last short batch dropped when asked, and
// the next batch built on a worker thread while the caller trains on the current one.
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/datasets.h"
#include "data/pairs.h"

namespace siam::data {

struct Batch {
  std::vector<Tensor> views;  // V tensors, view v: (B, C, H_v, W_v) f32
  Tensor labels;              // (B) i64: the label of view 0's image (-1 when unlabelled)
  Tensor indices;             // (B, V) i64: the image each view was made from
  std::vector<PairKind> kinds;  // (B)
  int64_t epoch = 0, index = 0;
  int64_t size() const { return labels.size(0); }
};

struct LoaderConfig {
  int64_t batch_size = 256;
  bool drop_last = true;
  bool prefetch = true;  // build the next batch on a worker thread
  // OpenMP threads that build one batch (0: OpenMP's default). One by default because the
  // worker runs beside training, which wants the cores.
  int threads = 1;
  // Where the views are made. A GPU: the u8 cache is copied there once (it must fit in the
  // free memory) and each view of a batch is one launch of the fused augmentation kernel, on
  // the calling thread's stream so training sees it in order; the views are f32 (B, C, H, W)
  // on that GPU. Planning a batch is cheap host work, so there is no worker thread then.
  Device device = Device::cpu();
  // Data parallel: this process builds share `shard` of `shards` equal shares of every batch
  // (rows [shard b, (shard + 1) b) of it, b = batch_size / shards). The epoch order and every
  // view's augmentation depend on the global row only, so the shares of all ranks together are
  // the batch one process would build. batch_size must be a multiple of shards, drop_last on.
  int shard = 0, shards = 1;
};

// Builds the batch from a plan. images: (N, H, W, C) u8, the set the generator indexes; on the
// CPU the executor makes the views with `threads` OpenMP threads, on a GPU the fused kernel
// (data::augment_batch) makes them there.
Batch build_batch(const ImageSet& images, const BatchPlan& plan, int threads = 1);

class Loader {
 public:
  // `images` must be the set `gen` was built on (for a PairList or VideoSet: its images or
  // frames).
  Loader(ImageSet images, PairGenerator gen, LoaderConfig cfg);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t batches_per_epoch() const;
  const PairGenerator& generator() const { return gen_; }

  // Starts an epoch: computes its order and, with prefetch, starts building batch 0.
  void start_epoch(int64_t epoch);
  // The next batch of the current epoch; false once the epoch is exhausted.
  bool next(Batch& out);
  // Batch `index` of `epoch`, built on the calling thread: equal to what next() returns.
  Batch batch(int64_t epoch, int64_t index) const;

 private:
  Batch build(int64_t epoch, const std::vector<int64_t>& order, int64_t index) const;
  void request(int64_t index);  // hands batch `index` of the current epoch to the worker
  void worker_loop();

  ImageSet images_;
  PairGenerator gen_;
  LoaderConfig cfg_;
  int64_t epoch_ = -1, cursor_ = 0;
  std::vector<int64_t> order_;

  // Worker: one job at a time; the mutex guards everything below.
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, busy_ = false, ready_ = false;
  int64_t job_ = -1;
  Batch result_;
  std::exception_ptr error_;
};

}  // namespace siam::data
