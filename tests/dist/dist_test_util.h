#pragma once
// What the multi-rank tests share: the world, small exact tensors, a shared temp folder, a tiny
// pretraining config on synthetic MNIST, and runs on the first K ranks compared with each other.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/pretrain.h"
#include "autograd/ops_dist.h"
#include "nn/checkpoint.h"
#include "tests/synthetic_mnist.h"

namespace siam::disttest {

namespace fs = std::filesystem;

inline dist::Group& world() { return dist::world(); }

inline Tensor fresh(const Tensor& t) { return copy_to(t, t.device(), t.dtype()); }

// Values that differ by rank and element, exact in every dtype used.
inline Tensor rank_values(const Shape& s, DType dt, int rank) {
  Tensor t = empty(s, {dt});
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>((rank + 1) * 10 + static_cast<int>(i % 7));
  return from_vector(v, s, {dt});
}

inline double max_rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = copy_to(a, Device::cpu(), DType::f64).to_vector(),
                            y = copy_to(b, Device::cpu(), DType::f64).to_vector();
  EXPECT_EQ(x.size(), y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i)
    worst = std::max(worst, std::abs(x[i] - y[i]) / std::max(1e-12, std::max(std::abs(x[i]), std::abs(y[i]))));
  return worst;
}

// A folder all ranks of the world share: rank 0 names it and everyone gets the same path.
inline std::string shared_dir(const std::string& name) {
  const std::string path = (fs::temp_directory_path() / ("siam_dist_" + name)).string();
  world().barrier();
  if (world().rank() == 0) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  world().barrier();
  return path;
}

inline std::string tiny_config(const std::string& data_dir, const std::string& dtype) {
  return "[run]\nname = \"t\"\nepochs = 2\nbatch_size = 16\ncheckpoint_every = 1\nlog_every = 1\nknn_every = 0\n"
         "threads = 1\ndtype = \"" + dtype + "\"\n"
         "[backbone]\nsmall_input = true\nwidth = 4\n"
         "[data]\ndataset = \"mnist\"\nroot = \"" + data_dir + "\"\nheldout = 0\n"
         "[method.simclr]\nprojector = [32, 32, 16]\ntemperature = 0.5\n"
         "[method.moco]\nprojector = [32, 16]\nqueue_size = 40\n"
         "[method.byol]\nprojector = [32, 16]\npredictor = [32, 16]\n"
         "[method.simsiam]\nprojector = [32, 32]\npredictor = [8, 32]\n"
         "[method.dino]\nout_dim = 64\nhidden_dim = 32\nbottleneck_dim = 16\nwarmup_teacher_temp_epochs = 1\n"
         "[method.vicreg]\nprojector = [32, 32]\n"
         "[method.barlow]\nprojector = [32, 32]\n"
         "[augment]\nblur_p = [0.0, 0.0]\n"
         "[pairs]\nlocal_crops = 2\nlocal_size = 12\n"
         "[optimizer]\nwarmup_epochs = 1\n";
}

struct RunOutput {
  std::vector<double> losses;  // one per step
  std::map<std::string, Tensor> model;
  int64_t step = 0;
};

// Pretrains with `ranks` ranks of the world (the others wait); rank 0 reads the result back.
inline RunOutput run_with(int ranks, const std::string& config, const std::string& out, std::vector<std::string> sets,
                   int64_t stop_at = -1, bool resume = false) {
  const int r = world().rank();
  auto group = world().split(r < ranks ? 0 : 1);
  if (r < ranks) {
    apps::PretrainOptions o;
    o.config_path = config;
    o.sets = std::move(sets);
    o.output = out;
    o.console = false;
    o.group = group.get();
    o.stop_at_step = stop_at;
    o.resume = resume;
    apps::pretrain(o);
  }
  world().barrier();
  RunOutput res;
  if (r != 0) return res;
  std::ifstream in(out + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("kind", "") == "train") res.losses.push_back(j["loss"].get<double>());
  }
  nn::Checkpoint ck = nn::load_checkpoint(out + "/checkpoint.safetensors");
  res.model = ck.section("model");
  res.step = ck.step;
  return res;
}

inline void expect_same_run(const RunOutput& a, const RunOutput& b, double tol, const std::string& what) {
  if (world().rank() != 0) return;
  ASSERT_EQ(a.losses.size(), b.losses.size()) << what;
  ASSERT_FALSE(a.losses.empty()) << what;
  for (size_t i = 0; i < a.losses.size(); ++i)
    EXPECT_LE(std::abs(a.losses[i] - b.losses[i]), tol * std::max(1.0, std::abs(a.losses[i])))
        << what << ": loss at step " << i + 1 << ": " << a.losses[i] << " vs " << b.losses[i];
  ASSERT_EQ(a.model.size(), b.model.size()) << what;
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : a.model) {
    if (!is_floating(t.dtype())) continue;
    const Tensor& u = b.model.at(name);
    const std::vector<double> x = copy_to(t, Device::cpu(), DType::f64).to_vector(),
                              y = copy_to(u, Device::cpu(), DType::f64).to_vector();
    double scale = 0;
    for (double v : x) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < x.size(); ++i) {
      // A tensor that is zero up to rounding (a running mean of normalised values) is compared
      // on the scale 1e-6 instead of its own.
      const double d = std::abs(x[i] - y[i]) / std::max(scale, 1e-6);
      if (d > worst) worst = d, worst_name = name;
    }
  }
  EXPECT_LE(worst, tol) << what << ": final weights differ most in " << worst_name << " (" << worst
                        << " of the tensor's largest value)";
}

struct World {
  std::string dir, data, config;
  explicit World(const std::string& name, const std::string& dtype = "f64") {
    dir = shared_dir(name);
    data = dir + "/mnist";
    config = dir + "/tiny.toml";
    if (world().rank() == 0) {
      fs::create_directories(data);
      testdata::write_synthetic_mnist(data, "train", 64, 1);
      testdata::write_synthetic_mnist(data, "t10k", 40, 2);
      testdata::write_file(config, tiny_config(data, dtype));
    }
    world().barrier();
  }
  ~World() {
    world().barrier();
    if (world().rank() == 0) fs::remove_all(dir);
  }
};

// The largest absolute difference over every floating tensor of two runs' final states.
inline double max_abs_diff(const RunOutput& a, const RunOutput& b) {
  double worst = 0;
  for (const auto& [name, t] : a.model) {
    if (!is_floating(t.dtype())) continue;
    const std::vector<double> x = copy_to(t, Device::cpu(), DType::f64).to_vector(),
                              y = copy_to(b.model.at(name), Device::cpu(), DType::f64).to_vector();
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  }
  return worst;
}

}  // namespace siam::disttest
