// Checkpoints: a round trip keeps every tensor and field; training N steps equals N/2 steps,
// save, load into fresh objects, N/2 steps, bit for bit; truncated, foreign and other-version
// files are refused with an error naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>
#include <memory>

#include "nn/checkpoint.h"
#include "nn/ema.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tensor/safetensors.h"

using namespace siam;
using namespace siam::nn;
namespace fs = std::filesystem;

namespace {

std::string tmp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("siam_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

void expect_error(const std::string& path, const std::string& phrase) {
  try {
    load_checkpoint(path);
    ADD_FAILURE() << "no error; expected one containing '" << phrase << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "the error should name the file: " << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << msg;
  }
}

// x (N, in) -> (N, out), from broadcasting and sum (core ops only).
struct Affine : Module {
  Tensor weight, bias;
  Affine(int64_t in, int64_t out, Generator& g) {
    weight = register_parameter("weight", mul(randn({out, in}, g), 0.5));
    bias = register_parameter("bias", mul(randn({out}, g), 0.1));
  }
  Tensor forward(const Tensor& x) override { return sum(unsqueeze(x, 1) * weight, {2}) + bias; }
};

struct Mlp : Module {
  std::shared_ptr<Affine> l0, l2;
  Tensor scale;  // a buffer, so the EMA and the checkpoint carry one
  explicit Mlp(uint64_t seed) {
    Generator g(seed);
    l0 = register_module("0", std::make_shared<Affine>(5, 6, g));
    l2 = register_module("2", std::make_shared<Affine>(6, 3, g));
    scale = register_buffer("scale", full({3}, 1.0));
  }
  Tensor forward(const Tensor& x) override { return (*l2)(relu((*l0)(x))) * scale; }
};

enum class Kind { sgd, lars, adamw };
constexpr int64_t kTotal = 8;

std::unique_ptr<Optimizer> make_optimizer(Kind k, const Mlp& m) {
  std::vector<ParamGroup> g = bias_and_norm_groups(m.named_parameters(), 0.1, 1e-2);
  switch (k) {
    case Kind::sgd: return std::make_unique<SGD>(g, SgdOptions{.momentum = 0.9, .nesterov = true});
    case Kind::lars: return std::make_unique<LARS>(g);
    case Kind::adamw: return std::make_unique<AdamW>(g);
  }
  return nullptr;
}

// Everything a run carries from step to step: weights, EMA target, optimizer state, the data
// generator and the position of the schedules.
struct Trainer {
  Mlp model, target;
  std::unique_ptr<Optimizer> opt;
  EmaUpdater ema;
  Generator data;
  CosineSchedule lr{0.1, 0.001, kTotal, 2, 0.01}, wd{1e-2, 1e-1, kTotal};
  int64_t step = 0, epoch = 0;

  Trainer(Kind k, uint64_t seed) : model(seed), target(seed + 1), opt(make_optimizer(k, model)), ema(target, model, true),
                               data(seed + 2) {}

  void train(int64_t n) {
    for (int64_t i = 0; i < n; ++i, ++step) {
      Tensor x = randn({8, 5}, data), y = randn({8, 3}, data);
      opt->set_lr(lr(step));
      opt->set_weight_decay(wd(step));
      opt->zero_grad();
      autograd::backward(mean(pow(model(x) - y, 2)));
      clip_grad_norm(model.parameters(), 1.0);
      opt->step();
      ema.update(ema_momentum(0.99, step, kTotal));
      if (step % 3 == 2) ++epoch;
    }
  }

  void save(const std::string& path) const {
    Checkpoint ck;
    ck.sections["model"] = model.state_dict();
    ck.sections["target"] = target.state_dict();
    ck.sections["optim"] = opt->state_dict();
    ck.rng["data"] = data;
    ck.step = step;
    ck.epoch = epoch;
    ck.config = "method: test\n";
    save_checkpoint(path, ck);
  }

  void load(const std::string& path) {
    Checkpoint ck = load_checkpoint(path);
    model.load_state_dict(ck.section("model"));
    target.load_state_dict(ck.section("target"));
    opt->load_state_dict(ck.section("optim"));
    data = ck.generator("data");
    step = ck.step;
    epoch = ck.epoch;
  }
};

void expect_bit_identical(const std::string& what, const std::map<std::string, Tensor>& a,
                          const std::map<std::string, Tensor>& b) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [k, t] : a) {
    ASSERT_TRUE(b.count(k)) << what << ": " << k;
    EXPECT_EQ(t.to_vector(), b.at(k).to_vector()) << what << ": " << k;
  }
}

}  // namespace

TEST(Checkpoint, RoundTripKeepsEveryField) {
  Checkpoint ck;
  ck.sections["model"] = {{"layer.weight", reshape(arange(0, 6), {2, 3})}, {"layer.count", scalar_tensor(3, {DType::i64})}};
  ck.sections["optim"] = {{"layer.weight.exp_avg", full({2, 3}, 0.25, {DType::f64})}};
  ck.sections["empty"] = {};
  ck.rng["default"] = Generator(std::numeric_limits<uint64_t>::max(), 12345678901234567ull);
  ck.rng["data"] = Generator(7, 0);
  ck.epoch = 12;
  ck.step = 3456;
  ck.config = "method: dino\nname: \"quoted\" {json-like}\n";
  std::string p = tmp_path("ck_roundtrip.safetensors");
  save_checkpoint(p, ck);

  Checkpoint r = load_checkpoint(p);
  EXPECT_EQ(r.source, p);
  EXPECT_EQ(r.epoch, 12);
  EXPECT_EQ(r.step, 3456);
  EXPECT_EQ(r.config, ck.config);
  ASSERT_EQ(r.sections.size(), 3u);
  EXPECT_TRUE(r.section("empty").empty());
  for (const auto& [sec, ts] : ck.sections) {
    ASSERT_EQ(r.section(sec).size(), ts.size()) << sec;
    for (const auto& [k, t] : ts) {
      const Tensor& got = r.section(sec).at(k);
      EXPECT_EQ(got.dtype(), t.dtype()) << sec << "." << k;
      EXPECT_EQ(got.shape(), t.shape()) << sec << "." << k;
      EXPECT_EQ(got.to_vector(), t.to_vector()) << sec << "." << k;
    }
  }
  EXPECT_EQ(r.generator("default").seed(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(r.generator("default").offset(), 12345678901234567ull);
  EXPECT_EQ(r.generator("data").seed(), 7u);
  // The model section is a plain PyTorch-named state dict under "model.".
  EXPECT_TRUE(load_safetensors(p).tensors.count("model.layer.weight"));
  try {
    r.section("teacher");
    ADD_FAILURE() << "no error for a missing section";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no section 'teacher' (the checkpoint has: empty, model, optim)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(r.generator("cuda"), Error);
  ck.sections["bad.name"] = {};
  EXPECT_THROW(save_checkpoint(p, ck), Error);
  fs::remove(p);
}

TEST(Checkpoint, ResumeIsBitIdentical) {
  for (Kind k : {Kind::sgd, Kind::lars, Kind::adamw}) {
    SCOPED_TRACE(static_cast<int>(k));
    Trainer straight(k, 100);
    straight.train(kTotal);

    std::string p = tmp_path("ck_resume.safetensors");
    {
      Trainer first(k, 100);
      first.train(kTotal / 2);
      first.save(p);
    }
    Trainer resumed(k, 500);  // other weights, other data seed: the load must replace them all
    resumed.load(p);
    EXPECT_EQ(resumed.step, kTotal / 2);
    resumed.train(kTotal - kTotal / 2);
    fs::remove(p);

    EXPECT_EQ(resumed.step, straight.step);
    EXPECT_EQ(resumed.epoch, straight.epoch);
    expect_bit_identical("model", resumed.model.state_dict(), straight.model.state_dict());
    expect_bit_identical("target", resumed.target.state_dict(), straight.target.state_dict());
    expect_bit_identical("optimizer", resumed.opt->state_dict(), straight.opt->state_dict());
    EXPECT_EQ(resumed.data.offset(), straight.data.offset());
  }
}

TEST(Checkpoint, TruncatedFileIsRefused) {
  Trainer run(Kind::adamw, 1);
  std::string p = tmp_path("ck_trunc.safetensors");
  run.save(p);
  fs::resize_file(p, fs::file_size(p) - 10);  // the last tensor's data is cut
  expect_error(p, "truncated");
  fs::resize_file(p, 20);  // cut inside the header
  expect_error(p, "truncated");
  fs::remove(p);
  expect_error(p, "cannot open");
}

TEST(Checkpoint, ForeignOrOtherVersionFileIsRefused) {
  std::string p = tmp_path("ck_foreign.safetensors");
  save_safetensors(p, {{"weight", ones({2})}}, {{"format_version", "1"}});
  expect_error(p, "not a siam checkpoint: expected metadata format 'siam-checkpoint', found no format entry");
  save_safetensors(p, {{"weight", ones({2})}});
  expect_error(p, "not a siam checkpoint");

  Trainer run(Kind::sgd, 1);
  run.save(p);
  SafeTensors st = load_safetensors(p);
  st.metadata["format_version"] = "2";
  save_safetensors(p, st.tensors, st.metadata);
  expect_error(p, "checkpoint format version 2, this build of siam reads version 1");

  st.metadata["format_version"] = "1";
  st.tensors["stray"] = ones({1});
  save_safetensors(p, st.tensors, st.metadata);
  expect_error(p, "tensor 'stray' belongs to none of the checkpoint's sections");
  fs::remove(p);
}
