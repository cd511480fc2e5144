#include "data/loader.h"

#include <omp.h>

#include <algorithm>

#include "tensor/cuda_runtime.h"

namespace siam::data {

Batch build_batch(const ImageSet& images, const BatchPlan& plan, int threads) {
  const int64_t V = static_cast<int64_t>(plan.views.size()), B = static_cast<int64_t>(plan.rows.size());
  const Tensor& im = images.images;
  if (!im.defined() || im.dim() != 4 || im.dtype() != DType::u8 || !im.is_contiguous())
    fail("build_batch: images of '", images.name, "' must be a contiguous (N, H, W, C) u8 tensor");
  const int64_t N = images.size(), H = images.height(), W = images.width(), C = images.channels();
  if (C != 1 && C != 3) fail("build_batch: '", images.name, "' has ", C, " channels, expected 1 or 3");
  Batch out;
  out.kinds = plan.kinds;
  out.labels = empty({B}, {DType::i64});
  out.indices = empty({B, V}, {DType::i64});
  const bool labelled = images.labels.defined();
  for (int64_t v = 0; v < V; ++v) {
    SIAM_CHECK(static_cast<int64_t>(plan.views[v].size()) == B, "plan view ", v, " has ", plan.views[v].size(),
               " rows, expected ", B);
    const AugmentParams& first = plan.views[v].empty() ? AugmentParams{} : plan.views[v][0].params;
    for (int64_t b = 0; b < B; ++b) {
      const ViewSpec& s = plan.views[v][b];
      if (s.image < 0 || s.image >= N)
        fail("build_batch: view ", v, " of row ", b, " names image ", s.image, ", '", images.name, "' has ", N);
      if (s.params.src_h != H || s.params.src_w != W)
        fail("build_batch: view ", v, " of row ", b, " was drawn for ", s.params.src_h, " x ", s.params.src_w,
             " images, '", images.name, "' has ", H, " x ", W);
      SIAM_CHECK(s.params.out_h == first.out_h && s.params.out_w == first.out_w, "view ", v,
                 " mixes output sizes within a batch");
      out.indices.data<int64_t>()[b * V + v] = s.image;
    }
    if (im.device().is_cpu()) out.views.push_back(empty({B, C, first.out_h, first.out_w}));
  }
  for (int64_t b = 0; b < B; ++b)
    out.labels.data<int64_t>()[b] = labelled && V > 0 ? images.labels.data<int64_t>()[plan.views[0][b].image] : -1;
  if (!im.device().is_cpu()) {
    std::vector<AugmentJob> jobs(B);
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t b = 0; b < B; ++b) jobs[b] = {plan.views[v][b].image, plan.views[v][b].params};
      out.views.push_back(augment_batch(im, jobs));
    }
    return out;
  }
  const uint8_t* pixels = im.data<uint8_t>();
  const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for collapse(2) schedule(dynamic, 4) num_threads(nt)
  for (int64_t v = 0; v < V; ++v)
    for (int64_t b = 0; b < B; ++b) {
      const ViewSpec& s = plan.views[v][b];
      const int64_t per = C * s.params.out_h * s.params.out_w;
      augment_cpu(pixels + s.image * H * W * C, static_cast<int>(C), s.params, out.views[v].data<float>() + b * per);
    }
  return out;
}

Loader::Loader(ImageSet images, PairGenerator gen, LoaderConfig cfg)
    : images_(std::move(images)), gen_(std::move(gen)), cfg_(cfg) {
  if (cfg_.batch_size <= 0) fail("loader: batch size ", cfg_.batch_size, ", expected > 0");
  if (cfg_.threads < 0) fail("loader: threads ", cfg_.threads, ", expected >= 0 (0: OpenMP's default)");
  if (!images_.images.defined() || images_.images.dim() != 4 || images_.size() != gen_.num_images() ||
      images_.height() != gen_.image_height() || images_.width() != gen_.image_width())
    fail("loader: images of '", images_.name, "' are ",
         images_.images.defined() ? shape_str(images_.images.shape()) : "undefined", ", the pair generator was built on ",
         gen_.num_images(), " images of ", gen_.image_height(), " x ", gen_.image_width());
  if (cfg_.shards < 1 || cfg_.shard < 0 || cfg_.shard >= cfg_.shards)
    fail("loader: share ", cfg_.shard, " of ", cfg_.shards, ", expected 0 <= share < shares");
  if (cfg_.batch_size % cfg_.shards != 0)
    fail("loader: the batch of ", cfg_.batch_size, " does not split into ", cfg_.shards, " equal shares");
  if (cfg_.shards > 1 && !cfg_.drop_last) fail("loader: shares of a batch need drop_last (every batch whole)");
  if (batches_per_epoch() == 0)
    fail("loader: drop_last with batch size ", cfg_.batch_size, " leaves no batch of the ", gen_.rows_per_epoch(),
         " rows per epoch");
  if (!cfg_.device.is_cpu()) {
    // The kernel launches must be on the training thread's stream (siam's stream is per
    // thread), and planning is too cheap to hide: no worker.
    cfg_.prefetch = false;
    if (images_.images.device() != cfg_.device) {
      const double mb = static_cast<double>(images_.images.nbytes()) / (1 << 20);
      for (const cuda::DeviceInfo& d : cuda::devices())
        if (d.index == cfg_.device.index && static_cast<double>(images_.images.nbytes()) > 0.8 * d.free_memory)
          fail("loader: the u8 cache of '", images_.name, "' (", mb, " MiB) does not fit in the ",
               d.free_memory >> 20, " MiB free on ", cfg_.device.str(), "; make the views on the CPU (data.device = \"cpu\")");
      images_.images = copy_to(images_.images, cfg_.device, DType::u8);
    }
  }
  if (cfg_.prefetch) worker_ = std::thread(&Loader::worker_loop, this);
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

int64_t Loader::batches_per_epoch() const {
  const int64_t rows = gen_.rows_per_epoch(), b = cfg_.batch_size;
  return cfg_.drop_last ? rows / b : (rows + b - 1) / b;
}

Batch Loader::build(int64_t epoch, const std::vector<int64_t>& order, int64_t index) const {
  const int64_t share = cfg_.batch_size / cfg_.shards;
  const int64_t first = index * cfg_.batch_size + cfg_.shard * share;
  const int64_t count = std::min(share, static_cast<int64_t>(order.size()) - first);
  Batch b = build_batch(images_, gen_.plan(epoch, order.data() + first, count), cfg_.threads);
  b.epoch = epoch;
  b.index = index;
  return b;
}

Batch Loader::batch(int64_t epoch, int64_t index) const {
  if (index < 0 || index >= batches_per_epoch())
    fail("loader: batch ", index, ", expected 0..", batches_per_epoch() - 1);
  return build(epoch, gen_.epoch_order(epoch), index);
}

void Loader::start_epoch(int64_t epoch) {
  std::vector<int64_t> order = gen_.epoch_order(epoch);
  std::unique_lock<std::mutex> lk(mu_);
  // The worker reads epoch_ and order_: let a prefetch of the previous epoch finish first.
  cv_.wait(lk, [&] { return !busy_; });
  ready_ = false;
  error_ = nullptr;
  epoch_ = epoch;
  order_ = std::move(order);
  cursor_ = 0;
  lk.unlock();
  if (cfg_.prefetch) request(0);
}

void Loader::request(int64_t index) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = index;
    busy_ = true;
    ready_ = false;
  }
  cv_.notify_all();
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || (busy_ && !ready_ && job_ >= 0); });
    if (stop_) return;
    const int64_t index = job_;
    job_ = -1;
    lk.unlock();
    Batch b;
    std::exception_ptr err;
    try {
      b = build(epoch_, order_, index);
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    result_ = std::move(b);
    error_ = err;
    ready_ = true;
    busy_ = false;
    cv_.notify_all();
  }
}

bool Loader::next(Batch& out) {
  if (epoch_ < 0) fail("loader: next() before start_epoch()");
  if (cursor_ >= batches_per_epoch()) return false;
  const int64_t index = cursor_++;
  if (!cfg_.prefetch) {
    out = build(epoch_, order_, index);
    return true;
  }
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return ready_; });
    ready_ = false;
    err = error_;
    error_ = nullptr;
    out = std::move(result_);
  }
  if (err) {
    cursor_ = batches_per_epoch();  // the epoch cannot go on past a failed batch
    std::rethrow_exception(err);
  }
  SIAM_CHECK(out.index == index, "prefetched batch ", out.index, ", expected ", index);
  if (cursor_ < batches_per_epoch()) request(cursor_);
  return true;
}

}  // namespace siam::data
