// The fused augmentation kernel: views per second made from a u8 cache on the GPU, at 28, 64
// and 224 px (target on an H100: 200,000 64x64 views/s). The time of one call covers what a
// training step pays: checking the jobs, their upload from pinned memory and the launch
// (parameters are drawn on the host beforehand, as the pair generator does).
// Arguments: output side, 0/1 (SimCLR's probabilities / every op on), 0/1 (f32 planar /
// bf16 channels-last).
#include <vector>

#include "cuda_bench_util.h"
#include "data/augment.h"
#include "tensor/tensor.h"

namespace {

using namespace siam;

void BM_cuda_augment(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int size = static_cast<int>(state.range(0));
  const bool all_ops = state.range(1) != 0, bf16_nhwc = state.range(2) != 0;
  const int src = size + size / 8, channels = 3, images = 1024;
  const int64_t batch = size >= 224 ? 256 : 1024;
  Tensor host = empty({images, src, src, channels}, {DType::u8});
  for (int64_t i = 0; i < host.numel(); ++i) host.data<uint8_t>()[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
  const Tensor cache = copy_to(host, Device::cuda(0), DType::u8);
  data::AugmentConfig cfg = data::simclr_view(size);
  if (all_ops) {
    cfg.flip_p = cfg.jitter_p = cfg.grayscale_p = cfg.blur_p = cfg.solarize_p = 1.0f;
  }
  std::vector<data::AugmentJob> jobs;
  for (int64_t v = 0; v < batch; ++v)
    jobs.push_back({v % images, data::sample_augment(cfg, src, src, 1, static_cast<uint64_t>(v) << 4)});
  const DType dt = bf16_nhwc ? DType::bf16 : DType::f32;
  const data::ViewLayout layout = bf16_nhwc ? data::ViewLayout::nhwc : data::ViewLayout::nchw;
  const double ms = bench::gpu_ms([&] { data::augment_batch(cache, jobs, dt, layout); });
  for (auto _ : state) state.SetIterationTime(ms * 1e-3);
  const double out_bytes = static_cast<double>(batch) * channels * size * size * (bf16_nhwc ? 2 : 4);
  state.counters["views/s"] = batch / (ms * 1e-3);
  state.counters["out_GB/s"] = out_bytes / (ms * 1e-3) * 1e-9;
  state.counters["batch"] = static_cast<double>(batch);
}

}  // namespace

BENCHMARK(BM_cuda_augment)
    ->ArgNames({"px", "all_ops", "bf16_nhwc"})
    ->Args({28, 0, 0})
    ->Args({28, 1, 0})
    ->Args({64, 0, 0})
    ->Args({64, 1, 0})
    ->Args({64, 0, 1})
    ->Args({224, 0, 0})
    ->Args({224, 1, 0})
    ->Args({224, 0, 1})
    ->UseManualTime()
    ->Iterations(1);
