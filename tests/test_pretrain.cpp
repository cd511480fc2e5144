// `siam pretrain` end to end on a small synthetic MNIST-format data set (so the tests need no
// download): metrics, TensorBoard events and checkpoints are written and read back; a run
// stopped mid-epoch and resumed ends with the same bits as one never stopped (every method);
// a non-finite loss stops the run and keeps the last checkpoint; Ctrl-C saves and resumes;
// user errors are one clear line.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "apps/bench.h"
#include "apps/metrics_log.h"
#include "apps/pretrain.h"
#include "apps/run_config.h"
#include "nn/checkpoint.h"
#include "tensor/cuda_runtime.h"
#include "tests/synthetic_mnist.h"

using namespace siam;
using namespace siam::apps;
using namespace siam::testdata;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : name)
      if (c == '/') c = '_';
    path = fs::temp_directory_path() / ("siam_pretrain_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// 192 training images (64 held out for the monitor: 128 train, 8 steps of 16 per epoch), a
// width-4 ResNet-18 and small heads for every method.
std::string tiny_config(const std::string& data_dir, const std::string& output) {
  return "[run]\nname = \"t\"\noutput = \"" + output +
         "\"\nepochs = 3\nbatch_size = 16\ncheckpoint_every = 1\nlog_every = 2\nknn_every = 1\n"
         "[backbone]\nsmall_input = true\nwidth = 4\n"
         "[data]\ndataset = \"mnist\"\nroot = \"" + data_dir + "\"\nheldout = 64\nknn_bank = 128\n"
         "[method.simclr]\nprojector = [32, 32, 16]\ntemperature = 0.5\n"
         "[method.moco]\nprojector = [32, 16]\nqueue_size = 40\n"
         "[method.byol]\nprojector = [32, 16]\npredictor = [32, 16]\n"
         "[method.simsiam]\nprojector = [32, 32]\npredictor = [8, 32]\n"
         "[method.dino]\nout_dim = 64\nhidden_dim = 32\nbottleneck_dim = 16\nwarmup_teacher_temp_epochs = 2\n"
         "[method.vicreg]\nprojector = [32, 32]\n"
         "[method.barlow]\nprojector = [32, 32]\n"
         "[augment]\nblur_p = [0.0, 0.0]\n"
         "[pairs]\nlocal_crops = 2\nlocal_size = 12\n"
         "[optimizer]\nwarmup_epochs = 1\n";
}

// A data set and a config file in a temp folder; runs go to <dir>/run unless told otherwise.
struct Fixture {
  TempDir dir;
  std::string config, data, output;
  Fixture() {
    data = dir / "mnist";
    fs::create_directories(data);
    write_synthetic_mnist(data, "train", 192, 1);
    write_synthetic_mnist(data, "t10k", 100, 2);
    output = dir / "run";
    config = dir / "tiny.toml";
    write_file(config, tiny_config(data, output));
  }
  PretrainResult run(std::vector<std::string> sets = {}, bool resume = false, int64_t stop_at = -1,
                     const std::string& out = "") const {
    PretrainOptions o;
    o.config_path = config;
    o.sets = std::move(sets);
    o.resume = resume;
    o.stop_at_step = stop_at;
    o.output = out;
    o.console = false;
    return pretrain(o);
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));  // throws on a bad line
  return out;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Every tensor of the two sections equal to the bit.
void expect_identical(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    ASSERT_NE(it, b.end()) << what << ": " << name << " missing";
    const Tensor x = contiguous(t), y = contiguous(it->second);
    ASSERT_EQ(x.shape(), y.shape()) << what << ": " << name;
    ASSERT_EQ(x.dtype(), y.dtype()) << what << ": " << name;
    EXPECT_EQ(std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()), 0) << what << ": " << name << " differs";
  }
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The siam binary built beside this test binary; empty when it is not there.
std::string siam_binary() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  fs::path p = self.parent_path() / "siam";
  return fs::exists(p) ? p.string() : "";
}

// Starts `siam args...` with stdout and stderr sent to files; returns its pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& out, const std::string& err) {
  pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(out.c_str(), "w", stdout) || !freopen(err.c_str(), "w", stderr)) _exit(127);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

// ---------------------------------------------------------------- end to end

TEST(Pretrain, EndToEndWritesMetricsEventsAndCheckpoint) {
  Fixture f;
  PretrainResult r = f.run();
  EXPECT_TRUE(r.finished);
  EXPECT_EQ(r.step, 24);
  ASSERT_TRUE(r.knn_top1.has_value());
  EXPECT_GE(*r.knn_top1, 0.0);
  EXPECT_LE(*r.knn_top1, 100.0);

  // metrics.jsonl: every line parses; a train record every 2 steps, an epoch record per epoch.
  std::vector<nlohmann::json> lines = read_jsonl(f.output + "/metrics.jsonl");
  int train = 0, epochs = 0;
  for (const auto& j : lines) {
    if (j["kind"] == "train") {
      ++train;
      EXPECT_EQ(j["step"].get<int64_t>() % 2, 0);
      for (const char* k : {"loss", "lr", "weight_decay", "embedding_std", "views_per_s", "epoch"})
        EXPECT_TRUE(j.contains(k)) << k << " missing in " << j.dump();
    } else {
      EXPECT_EQ(j["kind"], "epoch");
      ++epochs;
      EXPECT_EQ(j["epoch"].get<int64_t>(), epochs);
      EXPECT_EQ(j["step"].get<int64_t>(), 8 * epochs);
      EXPECT_TRUE(j.contains("knn_top1")) << j.dump();
    }
  }
  EXPECT_EQ(train, 12);
  EXPECT_EQ(epochs, 3);

  // TensorBoard: one file, CRCs valid (the reader checks them), the version record first.
  std::vector<std::string> files = event_files(f.output);
  ASSERT_EQ(files.size(), 1u);
  std::vector<TensorBoardEvent> events = read_tensorboard_events(files[0]);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  int losses = 0;
  for (const auto& e : events)
    for (const auto& [tag, v] : e.scalars)
      if (tag == "train/loss") {
        ++losses;
        EXPECT_TRUE(std::isfinite(v));
      }
  EXPECT_EQ(losses, 12);

  // The checkpoint: the sections of the contract, the RNG state, the resolved config.
  nn::Checkpoint ck = nn::load_checkpoint(r.checkpoint);
  EXPECT_EQ(ck.epoch, 3);
  EXPECT_EQ(ck.step, 24);
  for (const char* s : {"model", "backbone", "optim"}) EXPECT_FALSE(ck.section(s).empty()) << s;
  EXPECT_TRUE(ck.section("backbone").count("conv1.weight")) << "torchvision names";
  EXPECT_TRUE(ck.section("model").count("backbone.conv1.weight"));
  ck.generator("default");
  Config cfg = checkpoint_config(ck.config, "ck");
  EXPECT_EQ(cfg.get_string("optimizer.name"), "lars") << "the derived defaults are written out";
  EXPECT_EQ(cfg.get_int("backbone.in_channels"), 1);
  EXPECT_EQ(file_bytes(f.output + "/config.toml"), ck.config);

  // load_backbone: the backbone rebuilt with the checkpoint's weights.
  LoadedBackbone lb = load_backbone(r.checkpoint);
  EXPECT_EQ(lb.feature_dim, 32);
  EXPECT_EQ(lb.step, 24);
  EXPECT_FALSE(lb.module->is_training());
  for (const auto& [name, t] : lb.module->state_dict()) {
    const Tensor a = contiguous(t), b = contiguous(ck.section("backbone").at(name));
    EXPECT_EQ(std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()), 0) << name;
  }
  autograd::NoGradGuard ng;
  EXPECT_EQ(lb.module->forward(zeros({2, 1, 28, 28})).shape(), (Shape{2, 32}));

  // A finished run resumed has nothing left to do; a fresh run refuses the folder.
  EXPECT_TRUE(f.run({}, true).finished);
  std::string e = error_of([&] { f.run(); });
  EXPECT_NE(e.find("already holds a run"), std::string::npos) << e;
  EXPECT_NE(e.find("--resume"), std::string::npos) << e;
}

// ---------------------------------------------------------------- resume

class PretrainResume : public ::testing::TestWithParam<std::string> {};

TEST_P(PretrainResume, StoppedMidEpochThenResumedEqualsUninterrupted) {
  Fixture f;
  const std::vector<std::string> sets = {"method.name=" + GetParam(), "run.epochs=2"};
  PretrainResult whole = f.run(sets, false, -1, f.dir / "whole");
  ASSERT_TRUE(whole.finished);

  PretrainResult part = f.run(sets, false, 11, f.dir / "parts");  // step 11: in epoch 2
  EXPECT_TRUE(part.interrupted);
  EXPECT_EQ(part.step, 11);
  EXPECT_EQ(nn::load_checkpoint(part.checkpoint).step, 11);
  PretrainResult rest = f.run(sets, true, -1, f.dir / "parts");
  ASSERT_TRUE(rest.finished);
  EXPECT_EQ(rest.step, whole.step);

  nn::Checkpoint a = nn::load_checkpoint(whole.checkpoint), b = nn::load_checkpoint(rest.checkpoint);
  expect_identical(a.section("model"), b.section("model"), GetParam() + " model");
  expect_identical(a.section("optim"), b.section("optim"), GetParam() + " optimizer state");
  EXPECT_EQ(a.generator("default").offset(), b.generator("default").offset());

  // The resumed run's metrics continue the first part's: the same records, the same losses.
  std::vector<nlohmann::json> la = read_jsonl(whole.folder + "/metrics.jsonl"),
                              lb = read_jsonl(rest.folder + "/metrics.jsonl");
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i]["kind"], lb[i]["kind"]);
    EXPECT_EQ(la[i]["step"], lb[i]["step"]);
    if (la[i]["kind"] == "train") {
      EXPECT_EQ(la[i]["loss"], lb[i]["loss"]) << "step " << la[i]["step"];
    }
  }
  // The second event file starts by telling TensorBoard to drop the first one's later steps.
  std::vector<std::string> files = event_files(rest.folder);
  ASSERT_EQ(files.size(), 2u);
  std::vector<TensorBoardEvent> second = read_tensorboard_events(files[1]);
  ASSERT_GE(second.size(), 2u);
  EXPECT_EQ(second[1].session_status, 1);
  EXPECT_EQ(second[1].step, 12);
}

INSTANTIATE_TEST_SUITE_P(Methods, PretrainResume,
                         ::testing::Values("simclr", "moco", "byol", "simsiam", "dino", "vicreg", "barlow"),
                         [](const auto& info) { return info.param; });

TEST(Pretrain, StopAtAnEpochEndKeepsTheEpochRecord) {
  Fixture f;
  PretrainResult part = f.run({"run.epochs=2"}, false, 8);
  EXPECT_TRUE(part.interrupted);
  std::vector<nlohmann::json> lines = read_jsonl(f.output + "/metrics.jsonl");
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["kind"], "epoch");
  EXPECT_EQ(lines.back()["step"], 8);
  EXPECT_TRUE(f.run({"run.epochs=2"}, true).finished);
}

// ---------------------------------------------------------------- failures

TEST(Pretrain, NonFiniteLossStopsTheRunAndKeepsTheLastCheckpoint) {
  Fixture f;
  ASSERT_TRUE(f.run({"run.epochs=1", "optimizer.warmup_epochs=0"}).finished);
  const std::string ck = f.output + "/checkpoint.safetensors";
  const std::string before = file_bytes(ck);
  // An absurd learning rate sends the weights to infinity within a step or two.
  std::string e = error_of([&] { f.run({"run.epochs=3", "optimizer.name=sgd", "optimizer.base_lr=1e30"}, true); });
  EXPECT_NE(e.find("the loss is"), std::string::npos) << e;
  EXPECT_NE(e.find("step "), std::string::npos) << e;
  EXPECT_NE(e.find("embedding_std"), std::string::npos) << "the message lists the loss terms: " << e;
  EXPECT_NE(e.find("the last checkpoint (step 8) is kept"), std::string::npos) << e;
  EXPECT_EQ(file_bytes(ck), before) << "the checkpoint must not be touched";
}

TEST(Pretrain, UserErrorsNameTheProblem) {
  Fixture f;
  // An unknown key lists the valid keys of its section.
  write_file(f.dir / "bad.toml", "[run]\nepochz = 3\n");
  PretrainOptions o;
  o.config_path = f.dir / "bad.toml";
  o.console = false;
  std::string e = error_of([&] { pretrain(o); });
  EXPECT_NE(e.find("unknown config key 'run.epochz'"), std::string::npos) << e;
  EXPECT_NE(e.find("run.epochs"), std::string::npos) << e;
  e = error_of([&] { f.run({"method.name=simclr2"}); });
  EXPECT_NE(e.find("method.name must be one of simclr, moco"), std::string::npos) << e;

  // A missing data set names the folder.
  e = error_of([&] { f.run({"data.root=\"/nonexistent/mnist\""}); });
  EXPECT_NE(e.find("/nonexistent/mnist"), std::string::npos) << e;
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  e = error_of([&] { f.run({"data.dataset=fashion_mnist", "data.root=\"/nonexistent/fm\""}); });
  EXPECT_NE(e.find("scripts/deps.sh data"), std::string::npos) << "how to install it: " << e;

  // --resume without a checkpoint; a corrupt checkpoint names the file.
  e = error_of([&] { f.run({}, true); });
  EXPECT_NE(e.find("no checkpoint to resume"), std::string::npos) << e;
  ASSERT_TRUE(f.run({"run.epochs=1", "optimizer.warmup_epochs=0"}).finished);
  const std::string ck = f.output + "/checkpoint.safetensors";
  std::string bytes = file_bytes(ck);
  write_file(ck, bytes.substr(0, bytes.size() / 2));
  e = error_of([&] { f.run({}, true); });
  EXPECT_NE(e.find(ck), std::string::npos) << e;

  // Settings that cannot work.
  e = error_of([&] { f.run({"run.batch_size=4096"}, false, -1, f.dir / "big"); });
  EXPECT_NE(e.find("run.batch_size is 4096"), std::string::npos) << e;
  if (!cuda::available()) {
    e = error_of([&] { f.run({"run.device=cuda"}, false, -1, f.dir / "gpu"); });
    EXPECT_NE(e.find("run.device = \"cuda\" but no GPU can be used"), std::string::npos) << e;
    e = error_of([&] { f.run({"run.precision=bf16"}, false, -1, f.dir / "bf16"); });
    EXPECT_NE(e.find("run.precision = \"bf16\" needs a GPU"), std::string::npos) << e;
  }
  e = error_of([&] { f.run({"optimizer.warmup_epochs=5"}, false, -1, f.dir / "warm"); });
  EXPECT_NE(e.find("optimizer.warmup_epochs (5) must be less than run.epochs (3)"), std::string::npos) << e;
}

// ---------------------------------------------------------------- the command line

TEST(PretrainCli, CtrlCSavesACheckpointAndResumeFinishesTheSameRun) {
  const std::string siam = siam_binary();
  if (siam.empty()) GTEST_SKIP() << "the siam binary is not beside the test binary";
  Fixture f;
  const std::string out = f.dir / "cli";
  pid_t pid = spawn({siam, "pretrain", f.config, "--output", out, "--set", "run.epochs=4"}, f.dir / "o1", f.dir / "e1");
  // Interrupt once the first metrics are out, i.e. somewhere in the run.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (file_bytes(out + "/metrics.jsonl").find("\"train\"") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGINT);
  const int code = wait_exit(pid);
  const std::string err = file_bytes(f.dir / "e1");
  if (code == 0) GTEST_SKIP() << "the run finished before the interrupt arrived";
  EXPECT_EQ(code, 130) << err;
  EXPECT_NE(err.find("checkpoint saved"), std::string::npos) << err;
  EXPECT_NE(err.find("--resume"), std::string::npos) << err;

  EXPECT_EQ(wait_exit(spawn({siam, "pretrain", f.config, "--output", out, "--set", "run.epochs=4", "--resume"},
                            f.dir / "o2", f.dir / "e2")),
            0)
      << file_bytes(f.dir / "e2");
  PretrainResult whole = f.run({"run.epochs=4"}, false, -1, f.dir / "whole");
  expect_identical(nn::load_checkpoint(whole.checkpoint).section("model"),
                   nn::load_checkpoint(out + "/checkpoint.safetensors").section("model"), "after Ctrl-C and --resume");
}

TEST(PretrainCli, BadInputIsOneLine) {
  const std::string siam = siam_binary();
  if (siam.empty()) GTEST_SKIP() << "the siam binary is not beside the test binary";
  Fixture f;
  write_file(f.dir / "bad.toml", "[optimizer]\nbase_lr = \"fast\"\n");
  struct Case {
    std::vector<std::string> args;
    std::string phrase;
  };
  const std::vector<Case> cases = {
      {{siam, "pretrain", f.dir / "missing.toml"}, "missing.toml"},
      {{siam, "pretrain", f.dir / "bad.toml"}, "'optimizer.base_lr' must be a number"},
      {{siam, "pretrain", f.config, "--set", "run.epochz=1"}, "unknown config key 'run.epochz'"},
      {{siam, "pretrain", f.config, "--bogus"}, "--bogus"},
      {{siam, "pretrain"}, "a config file is required"},
      {{siam, "bench", f.config, "--steps", "3"}, "at least 10"},
  };
  for (const auto& c : cases) {
    const int code = wait_exit(spawn(c.args, f.dir / "out", f.dir / "err"));
    const std::string err = file_bytes(f.dir / "err");
    EXPECT_NE(code, 0) << err;
    EXPECT_EQ(err.rfind("siam: ", 0), 0u) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one line: " << err;
    EXPECT_NE(err.find(c.phrase), std::string::npos) << err;
  }
  // --help works for every command.
  for (const char* cmd : {"pretrain", "bench"}) {
    EXPECT_EQ(wait_exit(spawn({siam, cmd, "--help"}, f.dir / "out", f.dir / "err")), 0);
    EXPECT_NE(file_bytes(f.dir / "out").find("Usage"), std::string::npos);
  }
}

// ---------------------------------------------------------------- bench

TEST(PretrainBench, ReportsTheMedianStepAndPeakMemory) {
  Fixture f;
  BenchOptions o;
  o.config_path = f.config;
  o.warmup = 1;
  o.steps = 10;
  nlohmann::ordered_json j = bench(o);
  EXPECT_EQ(j["bench"], "pretrain_step");
  EXPECT_EQ(j["impl"], "siam");
  EXPECT_EQ(j["batch"], 16);
  EXPECT_EQ(j["views"], 2);
  EXPECT_EQ(j["input"], nlohmann::json({1, 28, 28}));
  EXPECT_GT(j["ms_per_step"].get<double>(), 0);
  EXPECT_LE(j["ms_min"].get<double>(), j["ms_per_step"].get<double>());
  EXPECT_GE(j["ms_max"].get<double>(), j["ms_per_step"].get<double>());
  EXPECT_NEAR(j["pairs_per_s"].get<double>(), 16 * 1000.0 / j["ms_per_step"].get<double>(), 1e-6);
  EXPECT_GT(j["peak_rss_mb"].get<double>(), 1);
}
