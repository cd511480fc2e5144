#pragma once
// The evaluation subcommands of `siam`: knn, linear, finetune, invariance, view-emd, export,
// plot and preview. A command that reads a checkpoint rebuilds its backbone with
// load_backbone() and its data from the checkpoint's config; `--set data.KEY=VALUE` changes
// the data (another data set is the transfer protocol). Every command prints a human line
// per result and one JSON line ({"command": ...}) on the given stream.
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "apps/config.h"
#include "apps/eval.h"
#include "data/pairs.h"
#include "ssl/backbone.h"

namespace CLI {
class App;
}

namespace siam::apps {

// What every checkpoint command shares.
struct CheckpointInput {
  std::string checkpoint;
  std::vector<std::string> sets{};  // "data.key=value" overrides of the checkpoint's config
  int64_t batch_size = 256;       // images per forward pass when extracting features
};

struct KnnCommand {
  CheckpointInput input;
  std::vector<int64_t> k = {20, 200};
  double temperature = 0.07;
  std::string features = "backbone";  // backbone, random (the architecture freshly initialised) or pixels
};
void run_knn(const KnnCommand& c, std::ostream& out);

struct LinearCommand {
  CheckpointInput input;
  LinearProbeOptions probe{};
  std::string features = "backbone";
};
void run_linear(const LinearCommand& c, std::ostream& out);

struct FinetuneCommand {
  CheckpointInput input;
  std::string labels = "10%";  // the share of training labels: "1%", "10%", ...
  FinetuneOptions options{};
};
void run_finetune(const FinetuneCommand& c, std::ostream& out);
// "1%" -> 0.01; siam::Error unless it is a percentage in (0, 100].
double parse_label_share(const std::string& text);

struct InvarianceCommand {
  CheckpointInput input;
  std::vector<std::string> kinds = {"occlusion", "viewpoint", "illumination", "instance"};
  std::string folder{};         // a folder of sets (<class>/<set>/<image>) instead of kinds
  std::string features = "backbone";  // backbone, or random (the architecture freshly initialised)
  int64_t limit = 20;           // sets per class built from the test split
  int levels = 7;               // images per built set
  uint64_t seed = 0;
  std::vector<int64_t> k = {10, 25};
};
void run_invariance(const InvarianceCommand& c, std::ostream& out);

struct ViewEmdCommand {
  CheckpointInput input;        // sets may also name augment.*, pairs.* and run.seed here
  std::string pairs{};          // pairs.generator; empty: the checkpoint's
  int64_t n = 256;              // pairs measured
};
void run_view_emd(const ViewEmdCommand& c, std::ostream& out);

struct ExportCommand {
  std::string checkpoint{}, output{};
};
void run_export(const ExportCommand& c, std::ostream& out);

// Writes the backbone's state dict (torchvision / timm names and layouts) as safetensors with
// metadata format=siam.backbone, the architecture's fields (arch, in_channels, small_input,
// width, image_size, patch, feature_dim) and `extra`.
void export_backbone(const std::string& path, const nn::Module& backbone, const ssl::BackboneConfig& cfg,
                     int64_t feature_dim, const std::map<std::string, std::string>& extra = {});

struct PlotCommand {
  std::vector<std::string> runs{};
  std::string output = "curves.png";
};
void run_plot(const PlotCommand& c, std::ostream& out);

struct PreviewCommand {
  std::string config;
  std::vector<std::string> sets{};  // any key=value override
  std::string output = "preview.png";
  int64_t rows = 8;
  int64_t epoch = 0;
};
void run_preview(const PreviewCommand& c, std::ostream& out);

// `siam make-videos`: synthetic clips (data/synthetic_video.h) from a data set's images, for
// temporal pairs (pairs.generator = "temporal", data.dataset = "folder").
struct MakeVideosCommand {
  std::vector<std::string> sets{};  // data.* of the source, e.g. data.dataset="fashion_mnist"
  std::string output{};
  std::string split = "train";      // train or test
  int64_t clips = 1000, frames = 16;
  uint64_t seed = 0;
};
void run_make_videos(const MakeVideosCommand& c, std::ostream& out);

// Registers every command above on the CLI.
void add_eval_commands(CLI::App& app);

}  // namespace siam::apps
