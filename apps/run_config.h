#pragma once
// The configuration of a pretraining run: its schema (every key a TOML file or --set may
// name, with its default and help line) and the builders that turn a Config into the
// objects of a run: the backbone config, the data sets, the method, the optimizer recipe,
// the augmentation views and the pair generator.
//
// Sections: [run] [backbone] [data] [method] [method.<name>] [augment] [pairs] [optimizer].
// A few defaults depend on other keys (the method's official optimizer and augmentation,
// the data set's folder, channels, image size and statistics): the schema writes them as
// "auto", 0 or -1 (or an empty list), and resolve_defaults() replaces them by the values
// they stand for, so the config text stored in a run's folder and checkpoints is explicit.
// Keys of methods other than the chosen one are validated like any other and ignored.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/eval.h"
#include "data/datasets.h"
#include "data/pairs.h"
#include "ssl/backbone.h"
#include "ssl/method.h"
#include "tensor/device.h"

namespace siam::apps {

std::vector<ConfigKey> pretrain_schema();
// A Config over pretrain_schema() with its defaults.
Config pretrain_config();
// A TOML basic string holding v, for Config::set("key=" + toml_quote(path)).
std::string toml_quote(const std::string& v);

// Replaces every "auto" / 0 / -1 / empty default that stands for a value derived from other
// keys (listed in the keys' help) by that value, and checks every value's range: an
// unsupported name or an out-of-range number is a siam::Error naming the key, what it must be
// and what it is. Idempotent. The builders below call it on a copy, so they accept both.
void resolve_defaults(Config& cfg);

// The method's key in configs ("simclr", "moco", "byol", "simsiam", "dino", "vicreg", "barlow").
std::string method_name(const Config& cfg);

ssl::BackboneConfig backbone_config(const Config& cfg);
// The backbone alone (random initial weights from run.seed), as a method would build it.
ssl::Backbone make_backbone(const Config& cfg);

// The training images ([data] dataset, root, limit; STL-10 with unlabeled adds the unlabeled
// split after the labelled one) and the test split. A missing folder or file is a siam::Error
// naming it and, for Fashion-MNIST, how to install it.
data::ImageSet load_train_set(const Config& cfg);
data::ImageSet load_test_set(const Config& cfg);
// The data set's per-channel statistics ([data] mean and std when given).
Normalisation normalisation(const Config& cfg);

// The method with its backbone and heads, random initial weights drawn from run.seed.
std::unique_ptr<ssl::Method> make_method(const Config& cfg);
// The optimizer recipe: [optimizer] with "auto" values taken from the method's official one.
ssl::OptimRecipe optim_recipe(const Config& cfg);

// How gradients are clipped before the optimizer step ([optimizer] clip_grad, clip_mode).
struct ClipRecipe {
  double max_norm = 0;      // 0: no clipping
  bool per_parameter = false;  // DINO clips each parameter's gradient on its own
};
ClipRecipe clip_recipe(const Config& cfg);

// One augmentation config per view (2, or 2 + pairs.local_crops for multicrop), normalised
// with the data set's statistics.
std::vector<data::AugmentConfig> augment_views(const Config& cfg);
// The pair generator's config (kind, views, seed, overlap, semantic and mined settings).
data::PairConfig pair_config(const Config& cfg);

// The images a pair generator draws from and the generator, as [data] and [pairs] describe them:
// video folders for temporal pairs, a curated pair list (pairs.list), or the training set, with
// the neighbour file pairs.neighbours for mined pairs. keep, when given, picks which training
// images the generator uses (the pretrain kNN monitor holds some out); mined neighbour lists are
// renumbered to match, and a neighbour outside the kept images is dropped. `siam pretrain`,
// `siam preview` and `siam view-emd` all build their pairs here.
// The images idx picks from s, in that order, with their labels.
data::ImageSet subset(const data::ImageSet& s, const std::vector<int64_t>& idx);

struct PairSource {
  data::ImageSet images;
  std::optional<data::PairGenerator> generator;
};
using TrainSplit = std::function<std::vector<int64_t>(const data::ImageSet& all)>;
PairSource make_pair_source(const Config& cfg, const TrainSplit& keep = {});

// Where the run writes: run.output (--output sets it), else runs/<run.name>.
std::string run_folder(const Config& cfg);

// run.device: "cpu", or "auto", which picks the CPU until the CUDA kernels exist and says so
// once per process on stderr; "cuda" is a siam::Error saying the GPU path is not implemented.
Device resolve_device(const Config& cfg);
// run.threads > 0 sets the OpenMP and OpenBLAS thread counts; 0 keeps the defaults.
void apply_threads(const Config& cfg);

// A backbone rebuilt from a pretraining checkpoint: the "backbone" section's weights (the
// method's backbone(): DINO's teacher) in the architecture of the checkpoint's config.
struct LoadedBackbone {
  nn::ModulePtr module;  // forward: (N, C, H, W) -> (N, feature_dim); in eval mode
  int64_t feature_dim = 0;
  Config config;         // the run's resolved config, read from the checkpoint
  int64_t epoch = 0, step = 0;
};
LoadedBackbone load_backbone(const std::string& ckpt_path);
// The resolved config stored in a checkpoint.
Config checkpoint_config(const std::string& config_text, const std::string& source);

}  // namespace siam::apps
