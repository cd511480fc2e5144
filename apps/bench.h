#pragma once
// `siam bench CONFIG`: the training-step throughput of a run's config and the process's peak
// memory, printed as one JSON line (the format bench/simclr_step_torch.py, its PyTorch twin,
// prints too). Steps run on a few prebuilt batches, so the time is the step's alone
// (forward, backward, clipping, optimizer, EMA); building a batch is timed on its own.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace CLI {
class App;
}

namespace siam::apps {

struct BenchOptions {
  std::string config_path;
  std::vector<std::string> sets;
  int64_t warmup = 3;  // untimed steps first (allocator and cache warm-up)
  int64_t steps = 10;  // timed steps; the median is reported (at least 10)
};

// Keys: bench, impl, method, arch, device, threads, batch, views, input [C, H, W], warmup,
// steps, ms_per_step (median), ms_min, ms_max, pairs_per_s, views_per_s, data_ms_per_batch,
// peak_rss_mb (host resident set, the CPU's peak memory).
nlohmann::ordered_json bench(const BenchOptions& options);

// Registers `siam bench` on the CLI.
void add_bench_command(CLI::App& app);

}  // namespace siam::apps
