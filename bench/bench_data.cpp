// Views per second of the CPU augmentation executor (one thread), full SimCLR recipe, the
// source image the size of the view. "sample" draws the parameters only; "execute" draws and
// applies them; "all_ops" forces every op on (jitter, grayscale, blur), the worst case.
#include <benchmark/benchmark.h>

#include <vector>

#include "data/augment.h"

using namespace siam;
using namespace siam::data;

namespace {

std::vector<uint8_t> source(int side) {
  std::vector<uint8_t> img(static_cast<size_t>(side) * side * 3);
  for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<uint8_t>(i * 2654435761u >> 24);
  return img;
}

void run(benchmark::State& state, const AugmentConfig& cfg, bool execute) {
  const int side = static_cast<int>(state.range(0));
  std::vector<uint8_t> img = source(side);
  std::vector<float> out(static_cast<size_t>(3) * cfg.out_h * cfg.out_w);
  uint64_t offset = 0;
  for (auto _ : state) {
    AugmentParams p = sample_augment(cfg, side, side, 42, offset);
    offset += 16;
    if (execute) augment_cpu(img.data(), 3, p, out.data());
    benchmark::DoNotOptimize(p);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["views_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_SampleSimclr(benchmark::State& state) { run(state, simclr_view(static_cast<int>(state.range(0))), false); }

void BM_ExecuteSimclr(benchmark::State& state) { run(state, simclr_view(static_cast<int>(state.range(0))), true); }

void BM_ExecuteAllOps(benchmark::State& state) {
  AugmentConfig c = simclr_view(static_cast<int>(state.range(0)));
  c.jitter_p = c.grayscale_p = c.blur_p = 1.0f;
  run(state, c, true);
}

}  // namespace

BENCHMARK(BM_SampleSimclr)->Arg(28)->Arg(64)->Arg(224);
BENCHMARK(BM_ExecuteSimclr)->Arg(28)->Arg(64)->Arg(224);
BENCHMARK(BM_ExecuteAllOps)->Arg(28)->Arg(64)->Arg(224);
