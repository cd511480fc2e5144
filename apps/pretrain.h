#pragma once
// `siam pretrain`: self-supervised pretraining from a config. A run folder holds
//   config.toml               the resolved config (every derived default written out)
//   metrics.jsonl             one JSON object per line: "step" records every run.log_every
//                             steps, "epoch" records at each epoch's end
//   events.out.tfevents.*     the same scalars for TensorBoard
//   checkpoint.safetensors    the latest checkpoint (atomic): sections "model" (the method's
//                             whole state dict), "backbone" (method.backbone(), torchvision /
//                             timm names), "optim"; RNG "default"; epoch, step; config text
// A checkpoint is written every run.checkpoint_every epochs, at the end, on Ctrl-C (SIGINT)
// and when asked to stop at a step; --resume continues from it with the same result as a run
// that was never stopped. A non-finite loss stops the run before the optimizer step, leaving
// the last checkpoint as it was.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/run_config.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "nn/data_parallel.h"
#include "nn/precision.h"
#include "nn/schedule.h"

namespace CLI {
class App;
}

namespace siam::apps {

// Reads CONFIG (empty: the schema's defaults), applies --set assignments and --output, and
// resolves the derived defaults.
Config load_run_config(const std::string& path, const std::vector<std::string>& sets, const std::string& output = "");

// Everything one training step needs, built from a resolved config: the training data and its
// loader, the kNN monitor's images, the method, its optimizer and the per-step schedules.
//
// Data parallel: with a group of W ranks (by default the launcher's world), each rank builds
// its share of every batch (run.batch_size is the global batch and must split into W equal
// shares), batch norms are synchronised, the method gathers what its loss needs, gradients are
// averaged (nn::GradReducer) and the step's metrics are averaged over the ranks, so every rank
// holds the same weights and the run equals one process at the same global batch.
class Trainer {
 public:
  explicit Trainer(const Config& cfg, dist::Group* group = nullptr);

  // One optimizer step on `batch` at global step `step`: lr and weight decay from their
  // schedules, forward, backward, clipping, optimizer, the method's post-step updates.
  // Returns the step's scalars (loss, the method's terms, lr, wd, grad_norm when clipping).
  // A non-finite loss throws a siam::Error naming the step and the loss terms, before any
  // weight changes.
  std::map<std::string, double> step(const data::Batch& batch, int64_t step);
  // Top-1 (percent) of a weighted kNN (k = 20, T = 0.07) of the held-out images over the bank,
  // on the features of method().backbone(); nullopt when the monitor is off.
  std::optional<double> knn_monitor();

  ssl::Method& method() { return *method_; }
  nn::Optimizer& optimizer() { return *optimizer_; }
  data::Loader& loader() { return *loader_; }
  const Config& config() const { return cfg_; }
  // The ranks training together (a one-rank group without a launcher).
  dist::Group& group() { return *group_; }
  const nn::GradReducer* reducer() const { return reducer_.get(); }
  // Hash of every floating tensor of the method's state (weights, buffers): equal on every rank.
  uint64_t state_hash() const;
  Device device() const { return device_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t train_images() const { return train_images_; }

 private:
  Config cfg_;
  std::unique_ptr<dist::Group> group_;       // the training group (NCCL for CUDA tensors when auto)
  std::unique_ptr<dist::Group> grad_group_;  // the same ranks, for the gradient buckets
  std::unique_ptr<nn::GradReducer> reducer_;  // null in one process
  DType dtype_ = DType::f32;  // run.dtype
  Device device_;           // where the method lives and the step runs (run.device)
  nn::Precision precision_;  // run.precision
  std::unique_ptr<data::Loader> loader_;
  data::ImageSet heldout_, bank_;
  std::unique_ptr<ssl::Method> method_;
  std::unique_ptr<nn::Optimizer> optimizer_;
  std::unique_ptr<nn::CosineSchedule> lr_, wd_;
  ClipRecipe clip_;
  std::vector<Tensor> params_;  // the trainable parameters, for clipping
  int64_t steps_per_epoch_ = 0, total_steps_ = 0, train_images_ = 0;
};

struct PretrainOptions {
  std::string config_path;        // empty: the schema's defaults
  std::vector<std::string> sets;  // "key=value" overrides, applied in order (on --resume too)
  std::string output;             // run folder; empty: the config's
  bool resume = false;            // continue the run in the folder from its checkpoint
  // Stop once this many optimizer steps are done, as Ctrl-C does (checkpoint written, the
  // run resumable): splits a long run into pieces. -1: run to the end.
  int64_t stop_at_step = -1;
  bool console = true;  // progress on stderr (a bar on a terminal, periodic lines otherwise)
  // The ranks that train together; null: the launcher's world (one process without one). Only
  // rank 0 writes the run folder and prints.
  dist::Group* group = nullptr;
};

struct PretrainResult {
  std::string folder, checkpoint;
  int64_t epoch = 0, step = 0;       // where the run stands
  bool finished = false;             // every epoch done
  bool interrupted = false;          // stopped by SIGINT or stop_at_step
  std::optional<double> knn_top1;    // the last monitor reading
};

PretrainResult pretrain(const PretrainOptions& options);

// Registers `siam pretrain` on the CLI.
void add_pretrain_command(CLI::App& app);

}  // namespace siam::apps
