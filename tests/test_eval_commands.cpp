// The evaluation subcommands end to end on a tiny checkpoint: a ResNet-18 of width 4 whose
// config reads a folder data set of 8x8 PNGs written here. Each command must print its human
// line and a JSON line that parses; options a user can get wrong are one-line errors.
#include <gtest/gtest.h>
#include <stb/stb_image_write.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/eval_commands.h"
#include "apps/run_config.h"
#include "nn/checkpoint.h"
#include "tensor/safetensors.h"

namespace siam::test {
namespace {

namespace fs = std::filesystem;

// Class "h": a bright horizontal bar, class "v": a vertical one, at varying positions.
void write_split(const fs::path& dir, int per_class, int offset) {
  for (int cls = 0; cls < 2; ++cls)
    for (int i = 0; i < per_class; ++i) {
      std::vector<uint8_t> px(8 * 8 * 3);
      const int pos = (i + offset) % 6 + 1;
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x)
          for (int c = 0; c < 3; ++c)
            px[(y * 8 + x) * 3 + c] = static_cast<uint8_t>(((cls == 0 ? y : x) == pos) ? 220 : 20 + 9 * ((x * 3 + y * 5 + i + c) % 7));
      const fs::path p = dir / (cls == 0 ? "h" : "v") / (std::to_string(i) + ".png");
      fs::create_directories(p.parent_path());
      ASSERT_TRUE(stbi_write_png(p.c_str(), 8, 8, 3, px.data(), 8 * 3));
    }
}

class EvalCommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("siam-eval-commands-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    write_split(root_ / "train", 16, 0);
    write_split(root_ / "test", 8, 3);
    config_ = (root_ / "tiny.toml").string();
    std::ofstream(config_) << "[run]\nseed = 3\n"
                           << "[method]\nname = \"simclr\"\n"
                           << "[backbone]\narch = \"resnet18\"\nwidth = 4\nsmall_input = true\n"
                           << "[data]\ndataset = \"folder\"\nroot = \"" << (root_ / "train").string()
                           << "\"\ntest_root = \"" << (root_ / "test").string() << "\"\nimage_size = 8\nchannels = 3\n";
    apps::Config cfg = apps::pretrain_config();
    cfg.load_file(config_);
    apps::resolve_defaults(cfg);
    ssl::Backbone b = apps::make_backbone(cfg);
    nn::Checkpoint ck;
    ck.sections["backbone"] = b.module->state_dict();
    ck.config = cfg.to_toml();
    ck.epoch = 2;
    ck.step = 20;
    checkpoint_ = (root_ / "checkpoint.safetensors").string();
    nn::save_checkpoint(checkpoint_, ck);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // The command's output: every line but the last is human, the last is the JSON line.
  template <class Command, class Run>
  static nlohmann::json run(const Command& c, Run fn, std::string* human = nullptr) {
    std::ostringstream out;
    fn(c, out);
    std::string text = out.str();
    EXPECT_FALSE(text.empty());
    text.pop_back();
    const size_t nl = text.rfind('\n');
    EXPECT_NE(nl, std::string::npos) << "expected a human line before the JSON line: " << text;
    if (human) *human = text.substr(0, nl);
    return nlohmann::json::parse(text.substr(nl + 1));
  }
  apps::CheckpointInput input(std::vector<std::string> sets = {}) const { return {checkpoint_, std::move(sets), 8}; }

  static fs::path root_;
  static std::string config_, checkpoint_;
};
fs::path EvalCommands::root_;
std::string EvalCommands::config_, EvalCommands::checkpoint_;

TEST_F(EvalCommands, Knn) {
  std::string human;
  nlohmann::json j = run(apps::KnnCommand{.input = input(), .k = {5, 32}}, apps::run_knn, &human);
  EXPECT_NE(human.find("knn: "), std::string::npos) << human;
  EXPECT_NE(human.find("(k = 32)"), std::string::npos) << human;
  EXPECT_EQ(j["command"], "knn");
  EXPECT_EQ(j["epoch"], 2);
  EXPECT_EQ(j["train_images"], 32);
  EXPECT_EQ(j["test_images"], 16);
  const double top1 = j["top1"]["5"];
  EXPECT_GE(top1, 0.0);
  EXPECT_LE(top1, 100.0);
  // Baselines: raw pixels separate the bars perfectly at k = 1.
  j = run(apps::KnnCommand{.input = input(), .k = {1}, .features = "pixels"}, apps::run_knn);
  EXPECT_EQ(j["features"], "pixels");
  EXPECT_DOUBLE_EQ(j["top1"]["1"].get<double>(), 100.0);
  j = run(apps::KnnCommand{.input = input(), .k = {3}, .features = "random"}, apps::run_knn);
  EXPECT_EQ(j["features"], "random");
  EXPECT_THROW(run(apps::KnnCommand{.input = input(), .features = "weights"}, apps::run_knn), Error);
  EXPECT_THROW(run(apps::KnnCommand{.input = input(), .k = {33}}, apps::run_knn), Error);  // more than 32 images
}

TEST_F(EvalCommands, Linear) {
  apps::LinearCommand c{.input = input()};
  c.probe.epochs = 3;
  c.probe.batch_size = 8;
  nlohmann::json j = run(c, apps::run_linear);
  EXPECT_EQ(j["command"], "linear");
  EXPECT_EQ(j["epochs"], 3);
  EXPECT_TRUE(j["top1"].is_number());
}

TEST_F(EvalCommands, Finetune) {
  apps::FinetuneCommand c{.input = input(), .labels = "10%"};
  c.options.epochs = 2;
  c.options.batch_size = 4;
  nlohmann::json j = run(c, apps::run_finetune);
  EXPECT_EQ(j["labelled_images"], 4);  // round(0.1 x 16) = 2 per class
  EXPECT_EQ(j["test_images"], 16);
  EXPECT_DOUBLE_EQ(apps::parse_label_share("1%"), 0.01);
  EXPECT_DOUBLE_EQ(apps::parse_label_share("10%"), 0.1);
  for (const char* bad : {"10", "0%", "101%", "x%", "%", "5%%"}) EXPECT_THROW(apps::parse_label_share(bad), Error) << bad;
}

TEST_F(EvalCommands, Invariance) {
  std::string human;
  nlohmann::json j = run(apps::InvarianceCommand{.input = input(), .kinds = {"occlusion", "instance"}, .limit = 2, .levels = 4},
                         apps::run_invariance, &human);
  EXPECT_NE(human.find("invariance occlusion:"), std::string::npos) << human;
  EXPECT_NE(human.find("invariance instance:"), std::string::npos) << human;
  EXPECT_EQ(j["results"]["occlusion"]["sets"], 4);
  EXPECT_EQ(j["results"]["instance"]["images"], 16);
  EXPECT_TRUE(j["results"]["occlusion"]["score"]["10"].is_number());
  EXPECT_TRUE(j["results"]["instance"]["score"]["25"].is_number());
  // A folder of sets: the test split's class folders hold images, not set folders.
  EXPECT_THROW(run(apps::InvarianceCommand{.input = input(), .folder = (root_ / "test").string()}, apps::run_invariance),
               Error);
  EXPECT_THROW(run(apps::InvarianceCommand{.input = input(), .kinds = {"rotation"}}, apps::run_invariance), Error);
}

TEST_F(EvalCommands, ViewEmd) {
  std::string human;
  nlohmann::json j = run(apps::ViewEmdCommand{.input = input({"run.seed=5"}), .pairs = "augmentation", .n = 6},
                         apps::run_view_emd, &human);
  EXPECT_NE(human.find("EMD mean"), std::string::npos) << human;
  EXPECT_EQ(j["count"], 6);
  const double mean = j["emd"]["mean"], q1 = j["emd"]["q1"], q3 = j["emd"]["q3"];
  EXPECT_GE(mean, 0.0);
  EXPECT_LE(mean, 2.0);
  EXPECT_LE(q1, q3);
  try {
    run(apps::ViewEmdCommand{.input = input({"backbone.arch=resnet50"}), .n = 2}, apps::run_view_emd);
    ADD_FAILURE() << "a backbone override must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("backbone.arch"), std::string::npos) << e.what();
  }
  EXPECT_THROW(run(apps::ViewEmdCommand{.input = input(), .n = 1000}, apps::run_view_emd), Error);
}

TEST_F(EvalCommands, DataOverridesOnly) {
  EXPECT_THROW(run(apps::KnnCommand{.input = input({"method.name=byol"})}, apps::run_knn), Error);
  EXPECT_THROW(run(apps::KnnCommand{.input = input({"data.root=/nonexistent"})}, apps::run_knn), Error);
}

TEST_F(EvalCommands, ExportPreviewPlot) {
  const std::string out = (root_ / "backbone.safetensors").string();
  nlohmann::json j = run(apps::ExportCommand{checkpoint_, out}, apps::run_export);
  EXPECT_EQ(j["arch"], "resnet18");
  SafeTensors st = load_safetensors(out);
  EXPECT_EQ(st.metadata.at("checkpoint"), checkpoint_);
  EXPECT_EQ(st.metadata.at("width"), "4");
  EXPECT_EQ(st.at("conv1.weight").shape(), (Shape{4, 3, 3, 3}));
  EXPECT_THROW(run(apps::ExportCommand{checkpoint_, ""}, apps::run_export), Error);

  const std::string png = (root_ / "preview.png").string();
  j = run(apps::PreviewCommand{.config = config_, .output = png, .rows = 3}, apps::run_preview);
  EXPECT_EQ(j["rows"], 3);
  EXPECT_GT(fs::file_size(png), 100u);
  EXPECT_THROW(run(apps::PreviewCommand{.config = config_, .sets = {"pairs.generator=tempo"}, .output = png},
                   apps::run_preview),
               Error);

  fs::create_directories(root_ / "run");
  std::ofstream(root_ / "run" / "metrics.jsonl") << "{\"kind\": \"step\", \"step\": 0, \"loss\": 1, \"lr\": 0.1}\n";
  try {
    j = run(apps::PlotCommand{{(root_ / "run").string()}, (root_ / "curves.png").string()}, apps::run_plot);
    EXPECT_EQ(j["command"], "plot");
  } catch (const Error& e) {
    if (std::string(e.what()).find("gnuplot not found") == std::string::npos) throw;
  }
}

TEST_F(EvalCommands, MissingCheckpoint) {
  EXPECT_THROW(run(apps::KnnCommand{.input = {(root_ / "none.safetensors").string(), {}, 8}}, apps::run_knn), Error);
  EXPECT_THROW(run(apps::KnnCommand{}, apps::run_knn), Error);
}

}  // namespace
}  // namespace siam::test
