// Training-curve plots (apps/plot.h): metrics.jsonl parsing with its errors, the generated
// gnuplot script, and a real PNG when gnuplot is installed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "apps/plot.h"
#include "tensor/error.h"

namespace siam::test {
namespace {

namespace fs = std::filesystem;

class Plot : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("siam-plot-test-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string run(const std::string& name, const std::string& jsonl) {
    fs::create_directories(root_ / name);
    std::ofstream(root_ / name / "metrics.jsonl") << jsonl;
    return (root_ / name).string();
  }
  fs::path root_;
};

const char* kSimclr =
    "{\"step\": 0, \"epoch\": 0, \"loss\": 5.5, \"lr\": 0.1}\n"
    "{\"step\": 1, \"epoch\": 0, \"loss\": 5.0, \"lr\": 0.2, \"embedding_std\": 0.06}\n"
    "\n"
    "{\"step\": 2, \"epoch\": 1, \"loss\": 4.5, \"lr\": 0.3, \"knn_top1\": 41.5}\n"
    "{\"epoch\": 1, \"knn_top1\": 42.0, \"note\": \"other keys are ignored\"}\n"
    "{\"kind\": \"epoch\", \"step\": 3, \"epoch\": 2, \"loss\": 4.7, \"knn_top1\": 43.0}\n";

TEST_F(Plot, ReadsSeries) {
  apps::RunMetrics m = apps::read_metrics(run("simclr", kSimclr));
  EXPECT_EQ(m.name, "simclr");
  ASSERT_EQ(m.loss.size(), 3u);
  EXPECT_EQ(m.loss[2], (std::array<double, 2>{2, 4.5}));
  ASSERT_EQ(m.lr.size(), 3u);
  EXPECT_EQ(m.lr[1], (std::array<double, 2>{1, 0.2}));
  ASSERT_EQ(m.knn.size(), 3u);
  EXPECT_EQ(m.knn[1], (std::array<double, 2>{1, 42.0}));
  EXPECT_EQ(m.knn[2], (std::array<double, 2>{2, 43.0}));
  ASSERT_EQ(m.embedding_std.size(), 1u);
  EXPECT_EQ(m.embedding_std[0], (std::array<double, 2>{1, 0.06}));
  // A trailing slash names the same run.
  EXPECT_EQ(apps::read_metrics((root_ / "simclr").string() + "/").name, "simclr");
}

TEST_F(Plot, ErrorsNameFileAndLine) {
  auto message = [&](const std::string& dir) {
    try {
      apps::read_metrics(dir);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(run("bad", "{\"step\": 0, \"loss\": 1}\nnot json\n")).find("metrics.jsonl:2"), std::string::npos);
  EXPECT_NE(message(run("str", "{\"step\": 0, \"loss\": \"high\"}\n")).find("\"loss\""), std::string::npos);
  EXPECT_NE(message(run("empty", "{\"step\": 0}\n")).find("no \"loss\""), std::string::npos);
  EXPECT_NE(message((root_ / "missing").string()).find("metrics.jsonl"), std::string::npos);
}

TEST_F(Plot, ScriptHasOnePanelPerQuantityAndOneLinePerRun) {
  std::vector<apps::RunMetrics> runs = {apps::read_metrics(run("simclr", kSimclr)),
                                        apps::read_metrics(run("byol's", "{\"step\": 0, \"loss\": 1}\n"))};
  std::string s = apps::gnuplot_script(runs, "/data", "/out/curves.png");
  EXPECT_NE(s.find("set multiplot layout 1,4"), std::string::npos) << s;
  EXPECT_NE(s.find("'/data/run0_embedding_std.dat'"), std::string::npos) << "the collapse signal";
  EXPECT_NE(s.find("set output '/out/curves.png'"), std::string::npos);
  EXPECT_NE(s.find("'/data/run0_loss.dat'"), std::string::npos);
  EXPECT_NE(s.find("'/data/run1_loss.dat'"), std::string::npos);
  EXPECT_EQ(s.find("run1_lr.dat"), std::string::npos) << "run 1 has no learning rate";
  EXPECT_NE(s.find("title 'byol''s'"), std::string::npos) << "quotes are doubled";
  runs.pop_back();
  runs[0].knn.clear();
  runs[0].embedding_std.clear();
  EXPECT_NE(apps::gnuplot_script(runs, "/d", "/o.png").find("layout 1,2"), std::string::npos);
}

TEST_F(Plot, WritesPng) {
  const std::string a = run("simclr", kSimclr), b = run("byol", "{\"step\": 0, \"loss\": 2, \"lr\": 0.1}\n{\"step\": 5, \"loss\": 1, \"lr\": 0.05}\n");
  const std::string out = (root_ / "curves.png").string();
  try {
    apps::plot_runs({a, b}, out);
  } catch (const Error& e) {
    if (std::string(e.what()).find("gnuplot not found") != std::string::npos) GTEST_SKIP() << e.what();
    throw;
  }
  std::ifstream f(out, std::ios::binary);
  char sig[8] = {};
  f.read(sig, 8);
  EXPECT_EQ(std::string(sig + 1, 3), "PNG");
  EXPECT_GT(fs::file_size(out), 1000u);
  EXPECT_THROW(apps::plot_runs({}, out), Error);
}

}  // namespace
}  // namespace siam::test
