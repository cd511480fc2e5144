#include "apps/bench.h"

#include <omp.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>

#include "apps/pretrain.h"
#include "tensor/cuda_runtime.h"

namespace siam::apps {

namespace {

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

nlohmann::ordered_json bench(const BenchOptions& o) {
  if (o.steps < 10) fail("bench: --steps must be at least 10 (the median of 10 or more steps), got ", o.steps);
  if (o.warmup < 1) fail("bench: --warmup must be at least 1, got ", o.warmup);
  std::vector<std::string> sets = o.sets;
  sets.push_back("run.knn_every=0");  // no held-out split: the monitor is not part of a step
  Config cfg = load_run_config(o.config_path, sets);
  apply_threads(cfg);
  Trainer t(cfg);

  // A few distinct batches, reused: real views without timing the data path in the step.
  using clock = std::chrono::steady_clock;
  const int64_t spe = t.steps_per_epoch();
  std::vector<data::Batch> batches;
  std::vector<double> data_ms;
  for (int64_t i = 0; i < std::min<int64_t>(4, spe); ++i) {
    const auto t0 = clock::now();
    batches.push_back(t.loader().batch(0, i));
    data_ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  const Device dev = t.device();
  auto sync = [&] {
    if (dev.is_cuda()) cuda::synchronize(dev.index);
  };
  std::vector<double> ms, backward_ms, tail_ms;
  for (int64_t s = 0; s < o.warmup + o.steps; ++s) {
    if (s == o.warmup && dev.is_cuda()) cuda::reset_pool_peak(dev.index);
    sync();
    const auto t0 = clock::now();
    t.step(batches[s % batches.size()], s % t.total_steps());
    sync();
    const double dt = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    if (s >= o.warmup) {
      ms.push_back(dt);
      if (const nn::GradReducer* r = t.reducer()) {
        backward_ms.push_back(1000 * r->last().backward_s);
        tail_ms.push_back(1000 * r->last().tail_s);
      }
    }
  }
  const data::Batch& b = batches[0];
  const double med = median(ms);
  const int ranks = t.group().size();
  const int64_t batch = b.size() * ranks, views = static_cast<int64_t>(b.views.size());  // the global batch
  nlohmann::ordered_json j;
  j["bench"] = "pretrain_step";
  j["impl"] = "siam";
  j["method"] = cfg.get_string("method.name");
  j["arch"] = cfg.get_string("backbone.arch");
  j["device"] = dev.str();
  j["threads"] = omp_get_max_threads();
  j["ranks"] = ranks;
  j["batch"] = batch;
  j["views"] = views;
  j["input"] = {b.views[0].size(1), b.views[0].size(2), b.views[0].size(3)};
  j["warmup"] = o.warmup;
  j["steps"] = o.steps;
  j["ms_per_step"] = med;
  j["ms_min"] = *std::min_element(ms.begin(), ms.end());
  j["ms_max"] = *std::max_element(ms.begin(), ms.end());
  j["pairs_per_s"] = static_cast<double>(batch) * 1000.0 / med;
  j["views_per_s"] = static_cast<double>(batch * views) * 1000.0 / med;
  j["data_ms_per_batch"] = median(data_ms);
  j["peak_rss_mb"] = peak_rss_mb();
  if (const nn::GradReducer* r = t.reducer()) {
    // Gradient averaging: backward with the overlapped all-reduces started inside it, then the
    // tail that waits for the rest (the communication backward did not hide).
    j["grad_mb_per_step"] = static_cast<double>(r->last().bytes) / (1024.0 * 1024.0);
    j["buckets"] = r->last().buckets;
    j["buckets_overlapped"] = r->last().overlapped;
    j["backward_ms"] = median(backward_ms);
    j["grad_reduce_tail_ms"] = median(tail_ms);
  }
  if (dev.is_cuda()) {
    j["gpu"] = cuda::devices().at(dev.index).name;
    j["peak_gpu_mib"] = static_cast<double>(cuda::pool_peak_bytes(dev.index)) / (1024.0 * 1024.0);
  }
  return j;
}

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Training-step time and peak memory of a config, as a JSON line");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("config", o->config_path, "the run's TOML config")->required();
  cmd->add_option("--set", o->sets, "override a config key (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--warmup", o->warmup, "untimed steps first")->capture_default_str();
  cmd->add_option("--steps", o->steps, "timed steps (>= 10; the median is reported)")->capture_default_str();
  cmd->callback([o] {
    const nlohmann::ordered_json j = bench(*o);
    if (dist::world().rank() == 0) std::cout << j.dump() << std::endl;  // one line per job
  });
}

}  // namespace siam::apps
