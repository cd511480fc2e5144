// `siam study`: the study file is checked (clear errors), the grid is the product of axes,
// variants and seeds with settings applied in order, and the runner on synthetic MNIST runs
// every study of configs/studies/ at smoke scale end to end (results.jsonl, results.md, PNG
// plots), skips finished cells, resumes an interrupted one from its checkpoint, and records a
// failing cell's error while the study goes on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/pretrain.h"
#include "apps/run_config.h"
#include "apps/study.h"
#include "nn/checkpoint.h"
#include "tests/synthetic_mnist.h"
#include "tests/test_util.h"

using namespace siam;
using namespace siam::apps;
namespace fs = std::filesystem;

namespace {

struct StudyDir {
  fs::path dir;
  std::string data;
  explicit StudyDir(const std::string& name) {
    dir = fs::temp_directory_path() / ("siam_study_" + std::to_string(getpid()) + "_" + name);
    fs::remove_all(dir);
    fs::create_directories(dir / "mnist");
    data = (dir / "mnist").string();
    testdata::write_synthetic_mnist(data, "train", 192, 1);
    testdata::write_synthetic_mnist(data, "t10k", 100, 2);
  }
  ~StudyDir() { fs::remove_all(dir); }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  // The synthetic data in place of Fashion-MNIST, for every cell.
  std::vector<std::string> data_sets() const { return {"data.dataset=\"mnist\"", "data.root=\"" + data + "\""}; }
};

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<nlohmann::json> jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// A small study of our own: two scale ranges x two seeds, SimCLR, one failing variant.
std::string tiny_study(const StudyDir& d, bool with_failure) {
  std::string s = R"(
[study]
name = "tiny"
base = ")" + std::string(SIAM_SOURCE_DIR) + R"(/configs/fashion_mnist/simclr_cpu.toml"
seeds = [0, 1]
evaluations = ["linear", "knn"]
[axes]
"augment.scale" = [[0.2, 1.0], [0.5, 1.0]]
[[variants]]
name = "any"
set = { "pairs.generator" = "augmentation" }
)";
  if (with_failure)
    s += R"([[variants]]
name = "impossible"
set = { "pairs.generator" = "overlap", "pairs.iou" = "zero", "pairs.max_tries" = 3 }
)";
  s += R"([set]
"run.knn_every" = 0
"data.heldout" = 0
[scale.smoke]
"run.epochs" = 2
"run.batch_size" = 32
"backbone.width" = 4
"method.simclr.projector" = [16, 8]
eval = { train_images = 192, linear_epochs = 2 }
)";
  const std::string path = d.path("tiny.toml");
  testdata::write_file(path, s);
  return path;
}

}  // namespace

TEST(Study, FileErrorsNameTheProblem) {
  StudyDir d("errors");
  const std::string base = std::string(SIAM_SOURCE_DIR) + "/configs/fashion_mnist/simclr_cpu.toml";
  auto write = [&](const std::string& body) {
    const std::string p = d.path("bad.toml");
    testdata::write_file(p, body);
    return p;
  };
  test::expect_error([&] { load_study(d.path("missing.toml")); }, "does not exist");
  test::expect_error([&] { load_study(write("[study]\nname = \"x\"\n")); }, "needs base");
  test::expect_error([&] { load_study(write("[study]\nname = \"x\"\nbase = \"nope.toml\"\nevaluations = [\"knn\"]\n")); },
                     "does not exist");
  test::expect_error(
      [&] { load_study(write("[study]\nname = \"x\"\nbase = \"" + base + "\"\nevaluations = [\"accuracy\"]\n")); },
      "evaluation 'accuracy' unknown");
  test::expect_error(
      [&] { load_study(write("[study]\nname = \"x\"\nbase = \"" + base + "\"\nevaluations = [\"knn\"]\nfoo = 1\n")); },
      "unknown key 'foo'");
  test::expect_error([&] {
    load_study(write("[study]\nname = \"x\"\nbase = \"" + base + "\"\nevaluations = [\"knn\"]\nx = \"run.epochs\"\n"
                     "[axes]\n\"augment.scale\" = [[0.2, 1.0]]\n"));
  }, "x = 'run.epochs' is not one of the axes");
  // A key the config does not know fails before anything trains.
  const std::string bad_key =
      write("[study]\nname = \"x\"\nbase = \"" + base + "\"\nevaluations = [\"knn\"]\n[axes]\n\"optimizer.lr\" = [0.1]\n");
  test::expect_error([&] { run_study({.path = bad_key, .scale = "smoke", .sets = {}, .output = d.path("o"), .console = false}); },
                     "unknown config key 'optimizer.lr'");
}

TEST(Study, GridIsAxesTimesVariantsTimesSeedsWithSettingsInOrder) {
  StudyDir d("grid");
  const StudySpec s = load_study(tiny_study(d, true));
  const auto cells = study_cells(s, "smoke", {"run.threads=1"});
  ASSERT_EQ(cells.size(), 2u * 2u * 2u);
  EXPECT_EQ(cells[0].id, "augment.scale=0.2-1.0__any__seed=0");
  const auto& sets = cells[0].sets;
  auto pos = [&](const std::string& a) { return std::find(sets.begin(), sets.end(), a) - sets.begin(); };
  // [set], then the axes, the variant, the scale, the seed, and the command line last.
  EXPECT_LT(pos("run.knn_every=0"), pos("augment.scale=[0.2, 1.0]"));
  EXPECT_LT(pos("augment.scale=[0.2, 1.0]"), pos("pairs.generator=\"augmentation\""));
  EXPECT_LT(pos("pairs.generator=\"augmentation\""), pos("run.epochs=2"));
  EXPECT_LT(pos("run.epochs=2"), pos("run.seed=0"));
  EXPECT_EQ(sets.back(), "run.threads=1");
  test::expect_error([&] { study_cells(s, "huge", {}); }, "--scale must be smoke, small or full");
}

TEST(Study, RunsResumesAndRecordsFailures) {
  StudyDir d("run");
  const std::string file = tiny_study(d, true);
  StudyOptions o{.path = file, .scale = "smoke", .sets = d.data_sets(), .output = d.path("out"), .console = false};
  // A cell interrupted mid-pretraining (as by Ctrl-C or a kill) is resumed from its checkpoint.
  const std::string folder = d.path("out") + "_smoke";
  const auto cells = study_cells(load_study(file), "smoke", o.sets);
  {
    PretrainOptions p;
    p.config_path = load_study(file).base;
    p.sets = cells[0].sets;
    p.output = folder + "/cells/" + cells[0].id;
    p.console = false;
    p.stop_at_step = 3;
    ASSERT_TRUE(pretrain(p).interrupted);
  }
  StudySummary s = run_study(o);
  EXPECT_EQ(s.cells, 8);
  EXPECT_EQ(s.done, 4);
  EXPECT_EQ(s.failed, 4) << "the impossible overlap variant fails in every cell";
  EXPECT_EQ(nn::load_checkpoint(folder + "/cells/" + cells[0].id + "/checkpoint.safetensors").step, 12)
      << "the interrupted cell did not finish its 2 epochs of 6 steps";
  const auto rows = jsonl(folder + "/results.jsonl");
  int evals = 0, errors = 0;
  for (const auto& r : rows) {
    if (r.contains("error")) {
      ++errors;
      EXPECT_NE(r["error"].get<std::string>().find("overlap constraint"), std::string::npos);
    } else {
      ++evals;
      EXPECT_TRUE(r.contains("linear_top1") || r.contains("knn20_top1")) << r.dump();
    }
  }
  EXPECT_EQ(evals, 4 * 2);
  EXPECT_EQ(errors, 4);
  const std::string md = read(folder + "/results.md");
  EXPECT_NE(md.find("| augment.scale | variant | seeds |"), std::string::npos) << md;
  EXPECT_NE(md.find(" +- "), std::string::npos) << "two seeds give a spread:\n" << md;
  EXPECT_NE(md.find("Failed cells"), std::string::npos);
  EXPECT_TRUE(fs::exists(folder + "/plot_linear_top1.png"));
  // Again: the finished cells are skipped, the failed ones tried again.
  s = run_study(o);
  EXPECT_EQ(s.skipped, 4);
  EXPECT_EQ(s.failed, 4);
  EXPECT_EQ(s.done, 0);
  // An evaluation lost (a kill while it was written) is redone alone.
  const std::string ev = folder + "/cells/" + cells[1].id + "/eval.jsonl";
  const std::string first_line = read(ev).substr(0, read(ev).find('\n') + 1);
  testdata::write_file(ev, first_line + "{\"truncated");
  s = run_study(o);
  EXPECT_EQ(s.done, 1);
  EXPECT_EQ(s.skipped, 3);
}

// Every study of configs/studies/ at smoke scale, end to end, on Fashion-MNIST as shipped
// (scripts/deps.sh build installs it: the studies' probes and invariance sets read it, and the
// temporal study makes its videos from it).
TEST(Study, EveryShippedStudyRunsAtSmokeScale) {
  StudyDir d("shipped");
  for (const auto& e : fs::directory_iterator(std::string(SIAM_SOURCE_DIR) + "/configs/studies")) {
    if (e.path().extension() != ".toml") continue;
    const std::string name = e.path().stem().string();
    StudyOptions o{.path = e.path().string(), .scale = "smoke", .sets = {}, .output = d.path(name), .console = false};
    const auto t0 = std::chrono::steady_clock::now();
    const StudySummary s = run_study(o);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cerr << name << ": " << s.cells << " cells, " << s.done << " done, " << s.failed << " failed in " << secs << " s\n";
    EXPECT_GT(s.done, 0) << name;
    EXPECT_EQ(s.done + s.failed, s.cells) << name;
    const std::string folder = d.path(name) + "_smoke";
    EXPECT_TRUE(fs::exists(folder + "/results.md")) << name;
    EXPECT_FALSE(jsonl(folder + "/results.jsonl").empty()) << name;
    bool png = false;
    for (const auto& f : fs::directory_iterator(folder)) png = png || f.path().extension() == ".png";
    EXPECT_TRUE(png) << name << ": no plot";
  }
}

// data.classes and data.per_class, which the semantic-pairs study uses to pretrain on five
// classes and probe the other five.
TEST(Study, ClassFilterAndImagesPerClass) {
  StudyDir d("classes");
  Config cfg = load_run_config("", {"data.dataset=\"mnist\"", "data.root=\"" + d.data + "\"", "data.classes=[3, 1]",
                                    "data.per_class=5", "data.heldout=0", "run.knn_every=0"});
  const data::ImageSet train = load_train_set(cfg), test = load_test_set(cfg);
  EXPECT_EQ(train.size(), 10);
  EXPECT_EQ(train.num_classes, 2);
  // The synthetic images cycle through the classes: class c is every image i with i % 10 == c.
  const std::vector<double> y = train.labels.to_vector();
  EXPECT_EQ(std::count(y.begin(), y.end(), 0.0), 5) << "class 3 becomes label 0";
  EXPECT_EQ(std::count(y.begin(), y.end(), 1.0), 5) << "class 1 becomes label 1";
  EXPECT_EQ(test.size(), 20) << "the test split keeps every image of the two classes";
  test::expect_error([&] { load_train_set(load_run_config("", {"data.dataset=\"mnist\"", "data.root=\"" + d.data + "\"",
                                                               "data.classes=[12]", "data.heldout=0", "run.knn_every=0"})); },
                     "data.classes names class 12");
}
