#pragma once
// `siam study STUDY.toml`: a grid of pretraining runs, each evaluated the same way, with a
// table, plots and the raw results (docs/studies.md).
//
// A study file names a base config, the axes to sweep (any config keys; each value a TOML
// value), optional named variants (several keys set together, crossed with the axes), the
// seeds, the evaluations, settings for every cell, and per-scale overrides:
//
//   [study]
//   name = "view_diversity"
//   base = "../fashion_mnist/simclr_cpu_studies.toml"  # relative to the study file
//   seeds = [0, 1]
//   evaluations = ["linear", "knn", "view_emd"]
//   x = "augment.scale"                          # the plots' x axis (default: the first axis)
//   [axes]
//   "method.name" = ["simclr", "moco"]
//   "augment.scale" = [[0.08, 1.0], [0.2, 1.0]]
//   "pairs" = [{ name = "none", set = {...} }, { name = "k=5", set = {...} }]   # a named axis
//   [[variants]]
//   name = "IoU = 0"
//   set = { "pairs.generator" = "overlap", "pairs.iou" = "zero" }
//   [set]                                        # every cell
//   "run.knn_every" = 0
//   [[prepare]]                                  # trained first; "{prepare.first}" names its folder
//   name = "first"
//   set = { "method.name" = "simclr" }
//   [scale.smoke]                                # --scale smoke (small and full likewise)
//   "run.epochs" = 1
//   eval = { train_images = 200 }                # the scale's evaluation settings
//   [eval]
//   train_images = 10000                         # probes fit on the first N training images
//
// Each cell (axes x variants x seeds) is an ordinary run folder under <study>/cells/, so it can
// be inspected, plotted and resumed alone. The runner skips finished cells, resumes
// interrupted ones from their checkpoint (Ctrl-C or kill -9, then the same command), records a
// failing cell's error and goes on. At the end (and after every cell) it writes
// results.jsonl (one line per cell and evaluation), results.md (mean +- std over seeds) and
// PNG plots (each evaluation against the x axis; accuracy against view EMD when measured).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace siam::apps {

struct StudyAxis {
  std::string key;                  // a config key, "augment.scale"
  std::vector<std::string> values;  // each a TOML value as text: "[0.08, 1.0]", "\"simclr\"", "0.5"
  std::vector<std::string> labels;  // the same values for people: "0.08-1.0", "simclr", "0.5"
  // A named axis (its key is no config key) has tables for values, { name = "k=5", set = {...} }:
  // each sets several keys at once. Empty for a plain axis.
  std::vector<std::vector<std::string>> value_sets;
};

struct StudyVariant {
  std::string name;               // the table's and the plots' label
  std::vector<std::string> sets;  // "key=value" (TOML value)
};

struct StudyEval {
  int64_t train_images = 10000;  // probes: the first N training images (data.limit)
  int64_t linear_epochs = 30;
  double linear_lr = 0.5;
  int64_t linear_batch = 1024;
  int64_t knn_k = 20;
  double knn_temperature = 0.07;
  int64_t emd_pairs = 256;
  int64_t invariance_sets = 20;      // sets per class for each transformation
  std::vector<std::string> finetune_labels{"10%"};
  int64_t finetune_epochs = 20;
  std::string transfer{};            // a config assignment naming the other data, e.g. data.dataset="mnist"
  std::vector<std::string> probe_sets{};  // data assignments for every probe (e.g. data.per_class=0)
};

// [videos]: synthetic clips (siam make-videos) written once into <study>/videos before any run;
// "{videos}" in a setting names that folder (temporal pairs: data.dataset = "folder").
struct StudyVideos {
  bool enabled = false;
  int64_t clips = 2000, frames = 16;
  uint64_t seed = 0;
  std::vector<std::string> source;  // data.* assignments of the source images
};

struct StudySpec {
  std::string path;        // the study file
  std::string name, description;
  std::string base;        // the base config, resolved
  std::string output;      // the study folder (default runs/studies/<name>)
  std::string x;           // the plots' x axis: an axis key
  std::vector<int64_t> seeds{0};
  // linear, knn, view_emd, invariance, finetune, transfer, mining (how often a usable mined
  // neighbour shares its anchor's label)
  std::vector<std::string> evaluations;
  std::vector<StudyAxis> axes;
  std::vector<StudyVariant> variants;    // at least one (an unnamed one when the file has none)
  // [[prepare]]: runs trained before the grid (a first-stage encoder to mine neighbours
  // with); "{prepare.NAME}" in any cell's assignment becomes that run's folder.
  std::vector<StudyVariant> prepare;
  std::vector<std::string> sets;         // [set]
  std::map<std::string, std::vector<std::string>> scales;  // [scale.<name>]
  StudyEval eval;                                          // [eval]
  std::map<std::string, StudyEval> scale_eval;             // [eval] with [scale.<name>.eval] over it
  StudyVideos videos;                                      // [videos]
  std::map<std::string, StudyVideos> scale_videos;         // [videos] with [scale.<name>.videos] over it
};

// Reads and checks a study file: unknown tables, keys or evaluations, empty axes, a base config
// that does not exist, an x that is not an axis: siam::Error naming the thing.
StudySpec load_study(const std::string& path);

struct StudyCell {
  std::string id;  // folder name: "augment.scale=0.08-1.0__SimCLR_IoU_=_0__seed=0"
  std::vector<std::pair<std::string, std::string>> coords;  // (axis key or "variant", value label)
  std::string variant;
  int64_t seed = 0;
  std::vector<std::string> sets;                   // every assignment, in order, for the cell's config
};

// The grid at a scale ("smoke", "small" or "full"; a scale the file lacks changes nothing),
// with extra assignments applied to every cell last.
std::vector<StudyCell> study_cells(const StudySpec& spec, const std::string& scale,
                                   const std::vector<std::string>& extra_sets);

struct StudyOptions {
  std::string path;
  std::string scale = "small";
  std::vector<std::string> sets;  // applied to every cell after everything else
  std::string output;             // the study folder; empty: the file's or runs/studies/<name>
  bool console = true;
};

struct StudySummary {
  std::string folder;
  int cells = 0, done = 0, failed = 0, skipped = 0;  // skipped: already finished before this call
};

StudySummary run_study(const StudyOptions& o);

// Rewrites results.jsonl, results.md and the plots from the cell folders as they are.
void write_study_report(const StudySpec& spec, const std::vector<StudyCell>& cells, const std::string& folder,
                        const std::string& scale);

void add_study_command(CLI::App& app);

}  // namespace siam::apps
