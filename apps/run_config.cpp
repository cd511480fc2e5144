#include "apps/run_config.h"

#include <omp.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>

#include "data/augment.h"
#include "dist/dist.h"
#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "ssl/barlow.h"
#include "ssl/byol.h"
#include "ssl/dino.h"
#include "ssl/moco.h"
#include "ssl/simclr.h"
#include "ssl/simsiam.h"
#include "ssl/supervised.h"
#include "ssl/vicreg.h"
#include "tensor/cuda_runtime.h"

namespace siam::apps {

namespace {

using List = std::vector<double>;

const std::vector<std::string> kMethods = {"simclr", "moco", "byol", "simsiam", "dino", "vicreg", "barlow", "supervised"};
const std::vector<std::string> kDatasets = {"fashion_mnist", "mnist", "cifar10", "cifar100", "stl10", "folder"};
const std::vector<std::string> kGenerators = {"augmentation", "semantic", "mined", "overlap", "temporal", "multicrop"};
const std::vector<std::string> kRecipes = {"simclr", "mocov2", "byol", "dino"};

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

void require_one_of(const Config& cfg, const std::string& key, const std::vector<std::string>& names) {
  const std::string& v = cfg.get_string(key);
  for (const auto& n : names)
    if (v == n) return;
  fail("config: ", key, " must be one of ", joined(names), ", got '", v, "'");
}

void require_int(const Config& cfg, const std::string& key, int64_t lo, int64_t hi = INT64_MAX) {
  int64_t v = cfg.get_int(key);
  if (v < lo || v > hi) {
    if (hi == INT64_MAX) fail("config: ", key, " must be >= ", lo, ", got ", v);
    fail("config: ", key, " must be in ", lo, " .. ", hi, ", got ", v);
  }
}

void require_positive(const Config& cfg, const std::string& key) {
  double v = cfg.get_double(key);
  if (!(v > 0) || !std::isfinite(v)) fail("config: ", key, " must be a positive number, got ", v);
}

void require_range(const Config& cfg, const std::string& key, double lo, double hi) {
  double v = cfg.get_double(key);
  if (!(v >= lo && v <= hi)) fail("config: ", key, " must be in [", lo, ", ", hi, "], got ", v);
}

void require_probabilities(const Config& cfg, const std::string& key, size_t n) {
  const List& v = cfg.get_list(key);
  if (v.size() != n) fail("config: ", key, " must list ", n, " probabilities (one per view), got ", v.size());
  for (double p : v)
    if (!(p >= 0 && p <= 1)) fail("config: ", key, " holds ", p, ", expected probabilities in [0, 1]");
}

// A [lo, hi] pair with lo_min <= lo <= hi <= hi_max.
void require_interval(const Config& cfg, const std::string& key, double lo_min, double hi_max) {
  const List& v = cfg.get_list(key);
  if (v.size() != 2)
    fail("config: ", key, " must be [lo, hi] with ", lo_min, " <= lo <= hi <= ", hi_max, ", got ", v.size(), " numbers");
  if (!(v[0] >= lo_min && v[0] <= v[1] && v[1] <= hi_max))
    fail("config: ", key, " must be [lo, hi] with ", lo_min, " <= lo <= hi <= ", hi_max, ", got [", v[0], ", ", v[1], "]");
}

std::vector<int64_t> dims(const Config& cfg, const std::string& key) {
  const List& v = cfg.get_list(key);
  if (v.empty()) fail("config: ", key, " must list at least one layer size, got an empty list");
  std::vector<int64_t> out;
  for (double d : v) {
    if (!(d >= 1) || d != std::floor(d) || d > 1e9)
      fail("config: ", key, " holds ", d, ", expected positive whole layer sizes");
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

// dims(), or none for an empty list (method.simclr.projector = []: no projector).
std::vector<int64_t> dims_or_none(const Config& cfg, const std::string& key) {
  return cfg.get_list(key).empty() ? std::vector<int64_t>{} : dims(cfg, key);
}

float f(const Config& cfg, const std::string& key) { return static_cast<float>(cfg.get_double(key)); }

// The data set's image side and channels, without reading it (folder: from the config, or 0
// when its images keep their own size).
int64_t dataset_side(const Config& cfg) {
  const std::string& d = cfg.get_string("data.dataset");
  if (d == "fashion_mnist" || d == "mnist") return 28;
  if (d == "cifar10" || d == "cifar100") return 32;
  if (d == "stl10") return 96;
  return cfg.get_int("data.image_size");
}

int64_t dataset_channels(const Config& cfg) {
  const std::string& d = cfg.get_string("data.dataset");
  if (d == "fashion_mnist" || d == "mnist") return 1;
  if (d == "folder") return cfg.get_int("data.channels");
  return 3;
}

std::string default_root(const std::string& dataset) {
  if (dataset == "fashion_mnist") return data::kFashionMnistDir;
  if (dataset == "mnist") return "data/mnist";
  if (dataset == "cifar10") return "data/cifar-10-batches-bin";
  if (dataset == "cifar100") return "data/cifar-100-binary";
  if (dataset == "stl10") return "data/stl10_binary";
  return "";
}

std::string default_recipe(const std::string& method) {
  if (method == "simclr") return "simclr";
  // SimSiam trains on MoCo v2's views; the supervised baseline too (crops, flips, colour).
  if (method == "moco" || method == "simsiam" || method == "supervised") return "mocov2";
  if (method == "dino") return "dino";
  return "byol";  // BYOL, VICReg and Barlow Twins share BYOL's asymmetric views
}

// The official recipe of each method, as its ssl config struct holds it.
ssl::OptimRecipe official_recipe(const std::string& method) {
  if (method == "simclr") return ssl::SimclrConfig{}.optim;
  if (method == "moco") return ssl::MocoConfig{}.optim;
  if (method == "byol") return ssl::ByolConfig{}.optim;
  if (method == "simsiam") return ssl::SimsiamConfig{}.optim;
  if (method == "dino") return ssl::DinoConfig{}.optim;
  if (method == "vicreg") return ssl::VicregConfig{}.optim;
  if (method == "supervised") return ssl::SupervisedConfig{}.optim;
  return ssl::BarlowConfig{}.optim;
}

// The recipe's views before the [augment] knobs: two, or DINO's 2 + n_local.
std::vector<data::AugmentConfig> recipe_views(const std::string& recipe, int size, int local_size, int n_local) {
  if (recipe == "simclr") return {data::simclr_view(size), data::simclr_view(size)};
  if (recipe == "mocov2") return {data::mocov2_view(size), data::mocov2_view(size)};
  if (recipe == "byol") {
    auto v = data::byol_views(size);
    return {v[0], v[1]};
  }
  return data::dino_views(size, local_size, n_local);
}

void set_value(Config& cfg, const std::string& key, const std::string& toml_value) { cfg.set(key + "=" + toml_value); }

// Shortest text that reads back as the same value; always a TOML float.
template <class T>
std::string num(T v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

// Values that came from a float field are written as that float's shortest text (0.08, not
// 0.079999998).
std::string list(const std::vector<float>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + num(v[i]);
  return s + "]";
}

}  // namespace

std::vector<ConfigKey> pretrain_schema() {
  using S = std::string;
  return {
      // [run]
      {"run.name", S("siam"), "names the run; its folder is runs/<name> unless run.output is set"},
      {"run.output", S(""), "run folder (metrics, TensorBoard events, checkpoints); empty: runs/<name>"},
      {"run.seed", int64_t{0}, "seed of the initial weights, the augmentations and the data order"},
      {"run.device", S("auto"), "auto, cpu or cuda (auto: the first GPU when one can be used, else the CPU)"},
      {"run.epochs", int64_t{100}, "training epochs"},
      {"run.batch_size", int64_t{256}, "images per step (each seen in every view); the last short batch is dropped"},
      {"run.checkpoint_every", int64_t{10}, "epochs between checkpoints (one is always written at the end)"},
      {"run.log_every", int64_t{50}, "steps between metric lines (metrics.jsonl, TensorBoard, console)"},
      {"run.knn_every", int64_t{10}, "epochs between online kNN checks on the held-out images; 0: off"},
      {"run.threads", int64_t{0}, "CPU threads (OpenMP and OpenBLAS); 0: the library defaults"},
      {"run.precision", S("f32"), "f32, or bf16 (CUDA only): products in bf16 with f32 master weights"},
      {"run.dtype", S("f32"), "f32, or f64 (CPU only: weights, views and every op in double, for verification)"},
      {"run.dist_backend", S("auto"),
       "under mpirun / srun: auto (NCCL for CUDA tensors, MPI for CPU ones), mpi (also CUDA tensors, through the "
       "host) or nccl"},
      {"run.bucket_mb", 25.0, "under mpirun / srun: megabytes of gradients per all-reduce bucket"},
      {"run.overlap_grad_reduce", true,
       "under mpirun / srun: start each bucket's all-reduce while backward runs (false: all after backward)"},
      // [backbone]
      {"backbone.arch", S("resnet18"), "resnet18, resnet34, resnet50, vit_tiny, vit_small or vit_base"},
      {"backbone.in_channels", int64_t{0}, "input channels; 0: the data set's"},
      {"backbone.small_input", false, "ResNet: 3x3 stride-1 stem without max-pool (28-64 px images)"},
      {"backbone.width", int64_t{64}, "ResNet: stem and first-stage channels (64 is torchvision's)"},
      {"backbone.image_size", int64_t{0}, "ViT: input side of the position embedding; 0: augment.crop_size"},
      {"backbone.patch", int64_t{16}, "ViT: patch side (4, 8 or 16)"},
      {"backbone.drop_path", 0.0, "ViT: stochastic depth rate (DINO's student: 0.1)"},
      // [data]
      {"data.dataset", S("fashion_mnist"), "fashion_mnist, mnist, cifar10, cifar100, stl10 or folder"},
      {"data.root", S(""), "data set folder; empty: the data set's default (Fashion-MNIST: /usr/share/datasets/fashion-mnist)"},
      {"data.test_root", S(""), "folder: the test images' folder (<class>/<image>)"},
      {"data.limit", int64_t{0}, "use only the first N training images; 0: all"},
      {"data.test_limit", int64_t{0}, "evaluations score only the first N test images; 0: all"},
      {"data.classes", List{},
       "keep only these classes (their labels become 0, 1, ... in this order), in both splits; empty: all"},
      {"data.per_class", int64_t{0}, "training split: the first N images of each class (after data.classes); 0: all"},
      {"data.heldout", int64_t{1000}, "last N labelled training images held out of training for the kNN monitor"},
      {"data.knn_bank", int64_t{10000}, "training images whose features the kNN monitor votes with"},
      {"data.unlabeled", false, "stl10: also train on the 100,000 unlabeled images"},
      {"data.coarse", false, "cifar100: the 20 superclass labels instead of the 100 classes"},
      {"data.channels", int64_t{3}, "folder: 1 (grey) or 3 (RGB)"},
      {"data.image_size", int64_t{0}, "folder: resize every image to this side on load; 0: keep the size"},
      {"data.mean", List{}, "per-channel mean of [0, 1] pixels; empty: the data set's"},
      {"data.std", List{}, "per-channel standard deviation; empty: the data set's"},
      {"data.device", S("cpu"),
       "where the views are made: cpu (the executor on a worker thread), or cuda (the u8 cache on the run's GPU, the "
       "fused augmentation kernel; needs run.device on a GPU)"},
      // [method]
      {"method.name", S("simclr"), "simclr, moco, byol, simsiam, dino, vicreg or barlow"},
      {"method.simclr.projector", List{2048, 2048, 128},
       "output sizes of the projector's Linear layers; [] for none (NT-Xent on the backbone's features)"},
      {"method.simclr.temperature", 0.1, "NT-Xent temperature (official at batch 4096; 0.2-0.5 at small batch)"},
      {"method.simclr.loss_impl", S("fused"), "the loss as one fused op, or composite (a chain of primitive ops)"},
      {"method.moco.projector", List{2048, 128}, "output sizes of the projector's Linear layers"},
      {"method.moco.temperature", 0.2, "InfoNCE temperature"},
      {"method.moco.queue_size", int64_t{65536}, "negative keys in the queue"},
      {"method.moco.momentum", 0.999, "key encoder EMA momentum"},
      {"method.moco.cosine_momentum", false, "raise the momentum to 1 on BYOL's cosine instead of keeping it"},
      {"method.moco.shuffle_bn", false,
       "under mpirun / srun: the official shuffle-BN (the key encoder sees a batch shuffled across the ranks and "
       "normalises it per rank) instead of SyncBN; the run then depends on the number of ranks"},
      {"method.moco.loss_impl", S("fused"), "the loss as one fused op, or composite (a chain of primitive ops)"},
      {"method.byol.projector", List{4096, 256}, "output sizes of the projector's Linear layers"},
      {"method.byol.predictor", List{4096, 256}, "output sizes of the predictor's Linear layers"},
      {"method.byol.base_momentum", 0.996, "target EMA momentum at step 0, cosine to 1"},
      {"method.byol.loss_impl", S("fused"), "the loss as one fused op, or composite (a chain of primitive ops)"},
      {"method.simsiam.projector", List{2048, 2048, 2048}, "output sizes of the projector's Linear layers"},
      {"method.simsiam.predictor", List{512, 2048}, "output sizes of the predictor's Linear layers"},
      {"method.simsiam.fix_predictor_lr", true, "the predictor keeps the initial learning rate"},
      {"method.simsiam.stop_gradient", true, "false: the paper's ablation without the stop-gradient (collapses)"},
      {"method.simsiam.loss_impl", S("fused"), "the loss as one fused op, or composite (a chain of primitive ops)"},
      {"method.dino.out_dim", int64_t{65536}, "prototypes K"},
      {"method.dino.hidden_dim", int64_t{2048}, "head MLP hidden size"},
      {"method.dino.bottleneck_dim", int64_t{256}, "head bottleneck size"},
      {"method.dino.n_layers", int64_t{3}, "Linear layers of the head MLP"},
      {"method.dino.use_bn", false, "batch norm in the head MLP (official: off for ViT)"},
      {"method.dino.norm_last_layer", true, "fix weight_g to 1 (unit prototypes)"},
      {"method.dino.student_temp", 0.1, "student temperature"},
      {"method.dino.warmup_teacher_temp", 0.04, "teacher temperature at epoch 0"},
      {"method.dino.teacher_temp", 0.07, "teacher temperature after the warm-up"},
      {"method.dino.warmup_teacher_temp_epochs", int64_t{30}, "epochs of the linear teacher temperature warm-up"},
      {"method.dino.center_momentum", 0.9, "centre EMA momentum"},
      {"method.dino.base_momentum", 0.996, "teacher EMA momentum at step 0, cosine to 1"},
      {"method.dino.freeze_last_layer_epochs", int64_t{1}, "epochs the student's last layer is frozen"},
      {"method.dino.loss_impl", S("fused"), "the loss as one fused op, or composite (a chain of primitive ops)"},
      {"method.vicreg.projector", List{8192, 8192, 8192}, "output sizes of the projector's Linear layers"},
      {"method.vicreg.sim_coeff", 25.0, "invariance weight"},
      {"method.vicreg.std_coeff", 25.0, "variance weight"},
      {"method.vicreg.cov_coeff", 1.0, "covariance weight"},
      {"method.vicreg.loss_impl", S("fused"), "the loss as one fused op, or composite (a chain of primitive ops)"},
      {"method.barlow.projector", List{8192, 8192, 8192}, "output sizes of the projector's Linear layers"},
      {"method.barlow.lambda", 0.0051, "weight of the off-diagonal term"},
      {"method.barlow.bias_lr_scale", 0.024, "learning-rate scale of biases and norm parameters (0.0048 / 0.2)"},
      {"method.supervised.num_classes", int64_t{0},
       "the supervised baseline's classes; 0: the data set's (data.classes counted when set)"},
      {"method.supervised.label_smoothing", 0.0, "the supervised baseline's cross-entropy label smoothing"},
      {"method.barlow.loss_impl", S("fused"), "the loss as one fused op, or composite (a chain of primitive ops)"},
      // [augment]
      {"augment.recipe", S("auto"), "simclr, mocov2, byol or dino; auto: the method's"},
      {"augment.crop_size", int64_t{0}, "side of the views; 0: the data set's image side"},
      {"augment.scale", List{}, "RandomResizedCrop area range [min, max] (the global crops for dino); empty: the recipe's"},
      {"augment.ratio", List{0.75, 4.0 / 3.0}, "RandomResizedCrop aspect-ratio range [min, max]"},
      {"augment.flip_p", 0.5, "horizontal flip probability"},
      {"augment.jitter_strength", 1.0, "scales the recipe's colour-jitter strengths (SimCLR's s)"},
      {"augment.jitter_p", -1.0, "colour-jitter probability; -1: the recipe's"},
      {"augment.grayscale_p", -1.0, "grayscale probability; -1: the recipe's"},
      {"augment.blur_p", List{}, "Gaussian-blur probability of view 1 and view 2; empty: the recipe's"},
      {"augment.solarize_p", List{}, "solarize probability of view 1 and view 2; empty: the recipe's"},
      // [pairs]
      {"pairs.generator", S("auto"),
       "augmentation, semantic, mined, overlap, temporal or multicrop; auto: multicrop for dino, else augmentation"},
      {"pairs.iou", S("zero"), "overlap: zero (disjoint crops) or interval (IoU in pairs.iou_range)"},
      {"pairs.iou_range", List{0.0, 1.0}, "overlap: [lo, hi] IoU of the two crop boxes"},
      {"pairs.max_tries", int64_t{1000}, "overlap: redraws before giving up"},
      {"pairs.semantic_mode", S("matched"), "semantic: matched (one pair per image) or all_pairs"},
      {"pairs.list", S(""), "CSV of curated pairs (semantic), or of the pairs whose images the augmentation baseline shows"},
      {"pairs.neighbours", S(""), "mined: neighbour file (safetensors) over the training images (siam mine writes one)"},
      {"pairs.mine_from", S(""),
       "mined: a checkpoint whose backbone mines pairs.neighbours on the first run when that file does not exist"},
      {"pairs.mine_k", int64_t{10}, "mined: neighbours per image when mining from pairs.mine_from"},
      {"pairs.mined_ratio", 0.5, "mined: share of rows that are anchor-neighbour pairs"},
      {"pairs.mined_threshold", 0.0, "mined: lowest cosine similarity of a usable neighbour"},
      {"pairs.min_gap", int64_t{1}, "temporal: least frames apart"},
      {"pairs.max_gap", int64_t{8}, "temporal: most frames apart"},
      {"pairs.local_crops", int64_t{8}, "multicrop: local crops per image"},
      {"pairs.local_size", int64_t{0}, "multicrop: local crop side; 0: crop_size x 96 / 224"},
      {"pairs.local_scale", List{0.05, 0.4}, "multicrop: local crop area range"},
      // [optimizer]
      {"optimizer.name", S("auto"), "sgd, lars or adamw; auto: the method's official optimizer"},
      {"optimizer.base_lr", -1.0, "learning rate per 256 images (lr = base_lr x batch / 256); -1: the method's"},
      {"optimizer.min_lr", 0.0, "learning rate at the end of the cosine decay"},
      {"optimizer.weight_decay", -1.0, "weight decay; -1: the method's"},
      {"optimizer.final_weight_decay", -1.0,
       "weight decay at the end of its cosine schedule; -1: weight_decay x the method's final / initial ratio"},
      {"optimizer.momentum", 0.9, "SGD and LARS momentum"},
      {"optimizer.warmup_epochs", int64_t{-1}, "epochs of linear learning-rate warm-up; -1: the method's"},
      {"optimizer.clip_grad", -1.0, "gradient-norm clipping threshold; 0: off; -1: the method's (DINO 3.0, else off)"},
      {"optimizer.clip_mode", S("auto"), "global (one norm) or per_parameter; auto: per_parameter for dino"},
  };
}

Config pretrain_config() { return Config(pretrain_schema()); }

std::string toml_quote(const std::string& v) {
  std::string q(1, '"');
  for (char c : v) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  q += '"';
  return q;
}

std::string method_name(const Config& cfg) {
  require_one_of(cfg, "method.name", kMethods);
  return cfg.get_string("method.name");
}

void resolve_defaults(Config& cfg) {
  const std::string method = method_name(cfg);
  require_one_of(cfg, "data.dataset", kDatasets);
  require_one_of(cfg, "run.device", {"auto", "cpu", "cuda"});
  require_one_of(cfg, "run.precision", {"f32", "bf16"});
  require_one_of(cfg, "run.dtype", {"f32", "f64"});
  require_one_of(cfg, "run.dist_backend", {"auto", "mpi", "nccl"});
  if (!(cfg.get_double("run.bucket_mb") > 0))
    fail("config: run.bucket_mb must be positive, got ", cfg.get_double("run.bucket_mb"));
  const std::string& dataset = cfg.get_string("data.dataset");

  // [run]
  require_int(cfg, "run.seed", 0);
  require_int(cfg, "run.epochs", 1);
  require_int(cfg, "run.batch_size", 2);
  require_int(cfg, "run.checkpoint_every", 1);
  require_int(cfg, "run.log_every", 1);
  require_int(cfg, "run.knn_every", 0);
  if (cfg.get_int("run.knn_every") > 0 && cfg.get_int("data.heldout") == 0)
    fail("config: run.knn_every > 0 needs held-out images: set data.heldout > 0, or run.knn_every = 0");
  require_int(cfg, "run.threads", 0, 1024);

  // [data]
  if (dataset == "folder") {
    require_int(cfg, "data.channels", 1, 3);
    if (cfg.get_int("data.channels") == 2) fail("config: data.channels must be 1 or 3, got 2");
    require_int(cfg, "data.image_size", 0, 65536);
  }
  if (cfg.get_string("data.root").empty()) {
    if (dataset == "folder") fail("config: data.root must name the image folder (<class>/<image>) for dataset 'folder'");
    set_value(cfg, "data.root", toml_quote(default_root(dataset)));
  }
  require_int(cfg, "data.limit", 0);
  require_int(cfg, "data.test_limit", 0);
  require_int(cfg, "data.per_class", 0);
  for (double c : cfg.get_list("data.classes"))
    if (c < 0 || c != std::floor(c)) fail("config: data.classes must list class indices (integers >= 0), got ", c);
  require_int(cfg, "data.heldout", 0);
  require_int(cfg, "data.knn_bank", 1);
  require_one_of(cfg, "data.device", {"cpu", "cuda"});
  for (const char* key : {"data.mean", "data.std"}) {
    const List& v = cfg.get_list(key);
    if (!v.empty() && v.size() != static_cast<size_t>(dataset_channels(cfg)))
      fail("config: ", key, " must hold one value per channel (", dataset_channels(cfg), "), got ", v.size());
    if (std::string(key) == "data.std")
      for (double s : v)
        if (!(s > 0)) fail("config: data.std holds ", s, ", expected positive values");
  }

  // [backbone]
  const std::string& arch = cfg.get_string("backbone.arch");
  require_one_of(cfg, "backbone.arch", {"resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small", "vit_base"});
  if (cfg.get_int("backbone.in_channels") == 0)
    set_value(cfg, "backbone.in_channels", std::to_string(dataset_channels(cfg)));
  if (cfg.get_int("backbone.in_channels") != dataset_channels(cfg))
    fail("config: backbone.in_channels is ", cfg.get_int("backbone.in_channels"), " but the data set's images have ",
         dataset_channels(cfg), " channel(s)");
  require_int(cfg, "backbone.width", 1, 4096);
  require_range(cfg, "backbone.drop_path", 0, 1);

  // [augment]
  if (cfg.get_string("augment.recipe") == "auto") set_value(cfg, "augment.recipe", toml_quote(default_recipe(method)));
  require_one_of(cfg, "augment.recipe", kRecipes);
  const std::string recipe = cfg.get_string("augment.recipe");
  if (cfg.get_int("augment.crop_size") == 0) {
    if (dataset_side(cfg) == 0)
      fail("config: augment.crop_size must be set when data.image_size is 0 (folder images keep their own sizes)");
    set_value(cfg, "augment.crop_size", std::to_string(dataset_side(cfg)));
  }
  require_int(cfg, "augment.crop_size", 1, 65536);
  const int64_t crop = cfg.get_int("augment.crop_size");
  if (cfg.get_int("backbone.image_size") == 0) set_value(cfg, "backbone.image_size", std::to_string(crop));
  require_int(cfg, "backbone.image_size", 1, 65536);
  if (arch.rfind("vit", 0) == 0 && cfg.get_int("backbone.image_size") != crop)
    fail("config: backbone.image_size (", cfg.get_int("backbone.image_size"), ") must equal augment.crop_size (", crop,
         ") for a ViT (its position embedding is made for one input size)");

  const std::vector<data::AugmentConfig> base = recipe_views(recipe, 8, 8, 0);
  if (cfg.get_list("augment.scale").empty())
    set_value(cfg, "augment.scale", list({base[0].scale_min, base[0].scale_max}));
  require_interval(cfg, "augment.scale", 1e-6, 1);
  require_interval(cfg, "augment.ratio", 1e-6, 1e6);
  require_range(cfg, "augment.flip_p", 0, 1);
  require_range(cfg, "augment.jitter_strength", 0, 1e6);
  if (cfg.get_double("augment.jitter_p") < 0) set_value(cfg, "augment.jitter_p", num(base[0].jitter_p));
  if (cfg.get_double("augment.grayscale_p") < 0) set_value(cfg, "augment.grayscale_p", num(base[0].grayscale_p));
  require_range(cfg, "augment.jitter_p", 0, 1);
  require_range(cfg, "augment.grayscale_p", 0, 1);
  if (cfg.get_list("augment.blur_p").empty()) set_value(cfg, "augment.blur_p", list({base[0].blur_p, base[1].blur_p}));
  if (cfg.get_list("augment.solarize_p").empty())
    set_value(cfg, "augment.solarize_p", list({base[0].solarize_p, base[1].solarize_p}));
  require_probabilities(cfg, "augment.blur_p", 2);
  require_probabilities(cfg, "augment.solarize_p", 2);

  // [pairs]
  if (cfg.get_string("pairs.generator") == "auto")
    set_value(cfg, "pairs.generator", method == "dino" ? "\"multicrop\"" : "\"augmentation\"");
  require_one_of(cfg, "pairs.generator", kGenerators);
  const std::string& gen = cfg.get_string("pairs.generator");
  require_one_of(cfg, "pairs.iou", {"zero", "interval"});
  require_interval(cfg, "pairs.iou_range", 0, 1);
  require_int(cfg, "pairs.max_tries", 1, 4000);
  require_one_of(cfg, "pairs.semantic_mode", {"matched", "all_pairs"});
  require_range(cfg, "pairs.mined_ratio", 0, 1);
  require_range(cfg, "pairs.mined_threshold", -1, 1);
  require_int(cfg, "pairs.mine_k", 1);
  require_int(cfg, "pairs.min_gap", 1);
  require_int(cfg, "pairs.max_gap", cfg.get_int("pairs.min_gap"));
  require_int(cfg, "pairs.local_crops", 0, 64);
  if (cfg.get_int("pairs.local_size") == 0)
    set_value(cfg, "pairs.local_size", std::to_string(std::max<int64_t>(1, std::lround(crop * 96.0 / 224.0))));
  require_int(cfg, "pairs.local_size", 1, 65536);
  require_interval(cfg, "pairs.local_scale", 1e-6, 1);
  if (gen == "multicrop" && method != "dino")
    fail("config: pairs.generator = \"multicrop\" feeds 2 + local crops, which only dino takes; method.name is '",
         method, "'");
  // A ViT takes local crops of any side that is a multiple of its patch (its position
  // embedding is resized to their patch grid, nn::ViT::tokens).
  if (gen == "multicrop" && arch.rfind("vit", 0) == 0 && cfg.get_int("pairs.local_crops") > 0 &&
      cfg.get_int("backbone.patch") > 0 && cfg.get_int("pairs.local_size") % cfg.get_int("backbone.patch") != 0)
    fail("config: a ViT cuts every crop into backbone.patch (", cfg.get_int("backbone.patch"),
         ") pixel patches, so pairs.local_size must be a multiple of it, got ", cfg.get_int("pairs.local_size"));
  if (gen == "mined" && cfg.get_string("pairs.neighbours").empty())
    fail("config: pairs.generator = \"mined\" needs pairs.neighbours (a neighbour file of the training images)");
  if (gen == "temporal" && dataset != "folder")
    fail("config: pairs.generator = \"temporal\" reads videos: data.dataset must be 'folder' with data.root holding "
         "<video>/<frame> folders, got '", dataset, "'");
  if ((gen == "temporal" || !cfg.get_string("pairs.list").empty()) && cfg.get_int("run.knn_every") > 0)
    fail("config: run.knn_every needs a labelled image set, and pairs from ",
         gen == "temporal" ? "videos" : "a list (pairs.list)", " have none: set run.knn_every = 0");

  // [method.*]: every method's keys are checked, the chosen one's are used.
  dims_or_none(cfg, "method.simclr.projector");
  for (const char* key : {"method.moco.projector", "method.byol.projector",
                          "method.byol.predictor", "method.simsiam.projector", "method.simsiam.predictor",
                          "method.vicreg.projector", "method.barlow.projector"})
    dims(cfg, key);
  for (const char* m : {"byol", "simsiam"}) {
    const std::string p = std::string("method.") + m;
    const int64_t proj = dims(cfg, p + ".projector").back(), pred = dims(cfg, p + ".predictor").back();
    if (proj != pred)
      fail("config: ", p, ".predictor must end in the projector's output size ", proj, ", got ", pred);
  }
  for (const char* key : {"method.simclr.temperature", "method.moco.temperature", "method.dino.student_temp",
                          "method.dino.warmup_teacher_temp", "method.dino.teacher_temp"})
    require_positive(cfg, key);
  for (const char* key : {"method.moco.momentum", "method.byol.base_momentum", "method.dino.center_momentum",
                          "method.dino.base_momentum"})
    require_range(cfg, key, 0, 1);
  require_int(cfg, "method.moco.queue_size", 1);
  for (const char* key : {"method.dino.out_dim", "method.dino.hidden_dim", "method.dino.bottleneck_dim",
                          "method.dino.n_layers"})
    require_int(cfg, key, 1);
  require_int(cfg, "method.dino.warmup_teacher_temp_epochs", 0);
  require_int(cfg, "method.dino.freeze_last_layer_epochs", 0);
  for (const char* m : {"simclr", "moco", "byol", "simsiam", "dino", "vicreg", "barlow"})
    require_one_of(cfg, std::string("method.") + m + ".loss_impl", {"fused", "composite"});
  for (const char* key : {"method.vicreg.sim_coeff", "method.vicreg.std_coeff", "method.vicreg.cov_coeff",
                          "method.barlow.lambda", "method.barlow.bias_lr_scale"})
    require_range(cfg, key, 0, 1e9);

  // [optimizer]
  const ssl::OptimRecipe official = official_recipe(method);
  if (cfg.get_string("optimizer.name") == "auto") set_value(cfg, "optimizer.name", toml_quote(official.optimizer));
  require_one_of(cfg, "optimizer.name", {"sgd", "lars", "adamw"});
  if (cfg.get_double("optimizer.base_lr") < 0) set_value(cfg, "optimizer.base_lr", num(official.base_lr));
  require_positive(cfg, "optimizer.base_lr");
  require_range(cfg, "optimizer.min_lr", 0, 1e9);
  const bool wd_auto = cfg.get_double("optimizer.weight_decay") < 0;
  if (wd_auto) set_value(cfg, "optimizer.weight_decay", num(official.weight_decay));
  if (cfg.get_double("optimizer.final_weight_decay") < 0) {
    double wd = cfg.get_double("optimizer.weight_decay");
    double ratio = official.weight_decay > 0 ? official.final_weight_decay / official.weight_decay : 1.0;
    set_value(cfg, "optimizer.final_weight_decay", num(wd_auto ? official.final_weight_decay : wd * ratio));
  }
  require_range(cfg, "optimizer.weight_decay", 0, 1e3);
  require_range(cfg, "optimizer.final_weight_decay", 0, 1e3);
  require_range(cfg, "optimizer.momentum", 0, 1);
  if (cfg.get_int("optimizer.warmup_epochs") < 0)
    set_value(cfg, "optimizer.warmup_epochs", std::to_string(official.warmup_epochs));
  if (cfg.get_double("optimizer.clip_grad") < 0) set_value(cfg, "optimizer.clip_grad", method == "dino" ? "3.0" : "0.0");
  require_range(cfg, "optimizer.clip_grad", 0, 1e12);
  if (cfg.get_string("optimizer.clip_mode") == "auto")
    set_value(cfg, "optimizer.clip_mode", method == "dino" ? "\"per_parameter\"" : "\"global\"");
  require_one_of(cfg, "optimizer.clip_mode", {"global", "per_parameter"});
}

static Config resolved(const Config& cfg) {
  Config c = cfg;
  resolve_defaults(c);
  return c;
}

ssl::BackboneConfig backbone_config(const Config& in) {
  Config cfg = resolved(in);
  return ssl::BackboneConfig{.arch = cfg.get_string("backbone.arch"),
                             .in_channels = cfg.get_int("backbone.in_channels"),
                             .small_input = cfg.get_bool("backbone.small_input"),
                             .image_size = cfg.get_int("backbone.image_size"),
                             .patch = cfg.get_int("backbone.patch"),
                             .drop_path = cfg.get_double("backbone.drop_path"),
                             .width = cfg.get_int("backbone.width")};
}

// Layers draw their initial weights from nn::init_generator(): seeding it here makes the
// weights a function of run.seed alone.
static void seed_init(const Config& cfg) { nn::init_generator().set_state(static_cast<uint64_t>(cfg.get_int("run.seed")), 0); }

ssl::Backbone make_backbone(const Config& in) {
  Config cfg = resolved(in);
  seed_init(cfg);
  return ssl::make_backbone(backbone_config(cfg));
}

static std::string install_hint(const std::string& dataset) {
  if (dataset == "fashion_mnist") return " (install it with `scripts/deps.sh data`, Debian package dataset-fashion-mnist)";
  if (dataset == "cifar10") return " (the binary release, cifar-10-binary.tar.gz, unpacked)";
  if (dataset == "cifar100") return " (the binary release, cifar-100-binary.tar.gz, unpacked)";
  if (dataset == "stl10") return " (the binary release, stl10_binary.tar.gz, unpacked)";
  return "";
}

static data::ImageSet decode_split(const Config& cfg, const std::string& split);

// Decoded splits are kept for the life of the process, keyed by what decoding depends on, so a
// study's many runs and evaluations decode each data set once. A file that changes on disk
// (its size or time) is decoded again. The sets are shared read-only: every consumer copies or
// views them, none writes into them.
static data::ImageSet load_split(const Config& cfg, const std::string& split) {
  const std::string& dataset = cfg.get_string("data.dataset");
  const std::string root = dataset == "folder" && split == "test" ? cfg.get_string("data.test_root") : cfg.get_string("data.root");
  std::error_code ec;
  const auto stamp = std::filesystem::last_write_time(root, ec);
  std::ostringstream key;
  key << dataset << "|" << root << "|" << split << "|" << cfg.get_bool("data.coarse") << "|" << cfg.get_int("data.image_size")
      << "|" << cfg.get_int("data.channels") << "|" << (ec ? 0 : stamp.time_since_epoch().count());
  static std::mutex mu;
  static std::map<std::string, data::ImageSet> cache;
  {
    std::lock_guard<std::mutex> lk(mu);
    if (auto it = cache.find(key.str()); it != cache.end()) return it->second;
  }
  data::ImageSet set = decode_split(cfg, split);
  std::lock_guard<std::mutex> lk(mu);
  cache.emplace(key.str(), set);
  return set;
}

static data::ImageSet decode_split(const Config& cfg, const std::string& split) {
  const std::string& dataset = cfg.get_string("data.dataset");
  std::string root = cfg.get_string("data.root");
  if (dataset == "folder" && split == "test") {
    root = cfg.get_string("data.test_root");
    if (root.empty()) fail("config: data.test_root must name the test images' folder for dataset 'folder'");
  }
  if (!std::filesystem::is_directory(root))
    fail("data set '", dataset, "': folder ", root, " does not exist", install_hint(dataset),
         "; set data.root to where it is");
  try {
    if (dataset == "fashion_mnist") return data::load_fashion_mnist(split, root);
    if (dataset == "mnist") return data::load_mnist(split, root);
    if (dataset == "cifar10") return data::load_cifar10(root, split);
    if (dataset == "cifar100") return data::load_cifar100(root, split, cfg.get_bool("data.coarse"));
    if (dataset == "stl10") return data::load_stl10(root, split);
    const int size = static_cast<int>(cfg.get_int("data.image_size"));
    return data::load_image_folder(root, {.height = size, .width = size, .channels = static_cast<int>(cfg.get_int("data.channels"))});
  } catch (const Error& e) {
    fail("data set '", dataset, "' (", split, " split): ", e.what(), install_hint(dataset));
  }
}

// The first n images of a set (a view of the same storage).
static data::ImageSet first(const data::ImageSet& s, int64_t n) {
  if (n <= 0 || n >= s.size()) return s;
  data::ImageSet out = s;
  out.images = narrow(s.images, 0, 0, n);
  out.labels = narrow(s.labels, 0, 0, n);
  return out;
}

static data::ImageSet concat(const data::ImageSet& a, const data::ImageSet& b) {
  if (a.height() != b.height() || a.width() != b.width() || a.channels() != b.channels())
    fail("cannot join ", a.name, " and ", b.name, ": their images differ in size");
  data::ImageSet out = a;
  out.images = cat({a.images, b.images}, 0);
  out.labels = cat({a.labels, b.labels}, 0);
  return out;
}

// data.classes and data.per_class: the images of the listed classes (relabelled 0, 1, ... in the
// list's order), the first per_class of each when per_class > 0.
static data::ImageSet select_classes(const data::ImageSet& s, const Config& cfg, bool per_class, int64_t limit) {
  const List& classes = cfg.get_list("data.classes");
  const int64_t cap = per_class ? cfg.get_int("data.per_class") : 0;
  if (classes.empty() && cap == 0) return s;
  if (!s.labels.defined()) fail("data.classes / data.per_class need labels, and '", s.name, "' has none");
  std::map<int64_t, int64_t> relabel;
  for (size_t i = 0; i < classes.size(); ++i) {
    const auto c = static_cast<int64_t>(classes[i]);
    if (c >= s.num_classes) fail("config: data.classes names class ", c, " but '", s.name, "' has ", s.num_classes);
    if (!relabel.emplace(c, static_cast<int64_t>(i)).second) fail("config: data.classes lists class ", c, " twice");
  }
  const Tensor lab = contiguous(s.labels);
  std::vector<int64_t> keep;
  std::map<int64_t, int64_t> taken;
  for (int64_t i = 0; i < s.size(); ++i) {
    const int64_t y = lab.data<int64_t>()[i];
    if (!relabel.empty() && !relabel.count(y)) continue;
    if (cap > 0 && taken[y]++ >= cap) continue;
    keep.push_back(i);
    if (limit > 0 && static_cast<int64_t>(keep.size()) == limit) break;  // data.limit / test_limit: no more needed
  }
  data::ImageSet out = subset(s, keep);
  if (!relabel.empty()) {
    for (int64_t i = 0; i < out.size(); ++i) out.labels.data<int64_t>()[i] = relabel.at(out.labels.data<int64_t>()[i]);
    out.num_classes = static_cast<int>(classes.size());
    std::vector<std::string> names;
    for (double c : classes)
      names.push_back(static_cast<size_t>(c) < s.class_names.size() ? s.class_names[static_cast<size_t>(c)]
                                                                       : std::to_string(static_cast<int64_t>(c)));
    out.class_names = names;
  }
  return out;
}

data::ImageSet load_train_set(const Config& in) {
  Config cfg = resolved(in);
  data::ImageSet train = first(select_classes(load_split(cfg, "train"), cfg, true, cfg.get_int("data.limit")), cfg.get_int("data.limit"));
  if (cfg.get_string("data.dataset") == "stl10" && cfg.get_bool("data.unlabeled"))
    train = concat(train, load_split(cfg, "unlabeled"));
  return train;
}

data::ImageSet load_test_set(const Config& in) {
  const Config cfg = resolved(in);
  return first(select_classes(load_split(cfg, "test"), cfg, false, cfg.get_int("data.test_limit")),
               cfg.get_int("data.test_limit"));
}

Normalisation normalisation(const Config& in) {
  Config cfg = resolved(in);
  const std::string& d = cfg.get_string("data.dataset");
  Normalisation n;  // ImageNet's, for folders of photos
  if (d == "fashion_mnist") n = {{0.2860f, 0.2860f, 0.2860f}, {0.3530f, 0.3530f, 0.3530f}};
  if (d == "mnist") n = {{0.1307f, 0.1307f, 0.1307f}, {0.3081f, 0.3081f, 0.3081f}};
  if (d == "cifar10") n = {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  if (d == "cifar100") n = {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  if (d == "stl10") n = {{0.4467f, 0.4398f, 0.4066f}, {0.2603f, 0.2566f, 0.2713f}};
  const List& mean = cfg.get_list("data.mean");
  const List& sd = cfg.get_list("data.std");
  for (size_t c = 0; c < mean.size(); ++c) n.mean[c] = static_cast<float>(mean[c]);
  for (size_t c = 0; c < sd.size(); ++c) n.std[c] = static_cast<float>(sd[c]);
  return n;
}

ssl::OptimRecipe optim_recipe(const Config& in) {
  Config cfg = resolved(in);
  return ssl::OptimRecipe{.optimizer = cfg.get_string("optimizer.name"),
                          .base_lr = cfg.get_double("optimizer.base_lr"),
                          .weight_decay = cfg.get_double("optimizer.weight_decay"),
                          .final_weight_decay = cfg.get_double("optimizer.final_weight_decay"),
                          .momentum = cfg.get_double("optimizer.momentum"),
                          .warmup_epochs = cfg.get_int("optimizer.warmup_epochs")};
}

ClipRecipe clip_recipe(const Config& in) {
  Config cfg = resolved(in);
  return {cfg.get_double("optimizer.clip_grad"), cfg.get_string("optimizer.clip_mode") == "per_parameter"};
}

std::unique_ptr<ssl::Method> make_method(const Config& in) {
  Config cfg = resolved(in);
  const std::string m = method_name(cfg);
  const ssl::BackboneConfig bb = backbone_config(cfg);
  const ssl::OptimRecipe optim = optim_recipe(cfg);
  seed_init(cfg);
  const std::string p = "method." + m + ".";
  if (m == "supervised") {
    ssl::SupervisedConfig c;
    c.backbone = bb;
    c.num_classes = cfg.get_int(p + "num_classes");
    if (c.num_classes == 0) {
      const std::string& d = cfg.get_string("data.dataset");
      if (!cfg.get_list("data.classes").empty()) c.num_classes = static_cast<int64_t>(cfg.get_list("data.classes").size());
      else if (d == "cifar100") c.num_classes = cfg.get_bool("data.coarse") ? 20 : 100;
      else if (d == "folder") fail("config: method.supervised.num_classes must be set for a folder data set");
      else c.num_classes = 10;
    }
    c.label_smoothing = cfg.get_double(p + "label_smoothing");
    c.optim = optim;
    return std::make_unique<ssl::Supervised>(c);
  }
  const ssl::LossImpl loss_impl =
      cfg.get_string(p + "loss_impl") == "composite" ? ssl::LossImpl::composite : ssl::LossImpl::fused;
  if (m == "simclr") {
    ssl::SimclrConfig c;
    c.backbone = bb;
    c.loss_impl = loss_impl;
    c.projector.dims = dims_or_none(cfg, p + "projector");
    c.temperature = cfg.get_double(p + "temperature");
    c.optim = optim;
    return std::make_unique<ssl::SimCLR>(c);
  }
  if (m == "moco") {
    ssl::MocoConfig c;
    c.backbone = bb;
    c.loss_impl = loss_impl;
    c.projector.dims = dims(cfg, p + "projector");
    c.temperature = cfg.get_double(p + "temperature");
    c.queue_size = cfg.get_int(p + "queue_size");
    c.momentum = cfg.get_double(p + "momentum");
    c.cosine_momentum = cfg.get_bool(p + "cosine_momentum");
    c.shuffle_bn = cfg.get_bool(p + "shuffle_bn");
    c.queue_seed = static_cast<uint64_t>(cfg.get_int("run.seed"));
    c.optim = optim;
    return std::make_unique<ssl::MoCo>(c);
  }
  if (m == "byol") {
    ssl::ByolConfig c;
    c.backbone = bb;
    c.loss_impl = loss_impl;
    c.projector.dims = dims(cfg, p + "projector");
    c.predictor.dims = dims(cfg, p + "predictor");
    c.base_momentum = cfg.get_double(p + "base_momentum");
    c.optim = optim;
    return std::make_unique<ssl::BYOL>(c);
  }
  if (m == "simsiam") {
    ssl::SimsiamConfig c;
    c.backbone = bb;
    c.loss_impl = loss_impl;
    c.projector.dims = dims(cfg, p + "projector");
    c.predictor.dims = dims(cfg, p + "predictor");
    c.fix_predictor_lr = cfg.get_bool(p + "fix_predictor_lr");
    c.stop_gradient = cfg.get_bool(p + "stop_gradient");
    c.optim = optim;
    return std::make_unique<ssl::SimSiam>(c);
  }
  if (m == "dino") {
    ssl::DinoConfig c;
    c.backbone = bb;
    c.loss_impl = loss_impl;
    c.head = {.out_dim = cfg.get_int(p + "out_dim"),
              .hidden_dim = cfg.get_int(p + "hidden_dim"),
              .bottleneck_dim = cfg.get_int(p + "bottleneck_dim"),
              .n_layers = cfg.get_int(p + "n_layers"),
              .use_bn = cfg.get_bool(p + "use_bn"),
              .norm_last_layer = cfg.get_bool(p + "norm_last_layer")};
    c.student_temp = cfg.get_double(p + "student_temp");
    c.warmup_teacher_temp = cfg.get_double(p + "warmup_teacher_temp");
    c.teacher_temp = cfg.get_double(p + "teacher_temp");
    c.warmup_teacher_temp_epochs = cfg.get_int(p + "warmup_teacher_temp_epochs");
    c.center_momentum = cfg.get_double(p + "center_momentum");
    c.base_momentum = cfg.get_double(p + "base_momentum");
    c.freeze_last_layer_epochs = cfg.get_int(p + "freeze_last_layer_epochs");
    c.optim = optim;
    return std::make_unique<ssl::DINO>(c);
  }
  if (m == "vicreg") {
    ssl::VicregConfig c;
    c.backbone = bb;
    c.loss_impl = loss_impl;
    c.projector.dims = dims(cfg, p + "projector");
    c.sim_coeff = cfg.get_double(p + "sim_coeff");
    c.std_coeff = cfg.get_double(p + "std_coeff");
    c.cov_coeff = cfg.get_double(p + "cov_coeff");
    c.optim = optim;
    return std::make_unique<ssl::VICReg>(c);
  }
  ssl::BarlowConfig c;
  c.backbone = bb;
  c.loss_impl = loss_impl;
  c.projector.dims = dims(cfg, p + "projector");
  c.lambda = cfg.get_double(p + "lambda");
  c.bias_lr_scale = cfg.get_double(p + "bias_lr_scale");
  c.optim = optim;
  return std::make_unique<ssl::BarlowTwins>(c);
}

std::vector<data::AugmentConfig> augment_views(const Config& in) {
  Config cfg = resolved(in);
  const int size = static_cast<int>(cfg.get_int("augment.crop_size"));
  const bool multicrop = cfg.get_string("pairs.generator") == "multicrop";
  const int n_local = multicrop ? static_cast<int>(cfg.get_int("pairs.local_crops")) : 0;
  std::vector<data::AugmentConfig> views =
      recipe_views(cfg.get_string("augment.recipe"), size, static_cast<int>(cfg.get_int("pairs.local_size")), n_local);
  const Normalisation norm = normalisation(cfg);
  const List& scale = cfg.get_list("augment.scale");
  const List& ratio = cfg.get_list("augment.ratio");
  const List& local_scale = cfg.get_list("pairs.local_scale");
  const float s = f(cfg, "augment.jitter_strength");
  for (size_t v = 0; v < views.size(); ++v) {
    data::AugmentConfig& a = views[v];
    const bool global = v < 2;
    a.scale_min = static_cast<float>(global ? scale[0] : local_scale[0]);
    a.scale_max = static_cast<float>(global ? scale[1] : local_scale[1]);
    a.ratio_min = static_cast<float>(ratio[0]);
    a.ratio_max = static_cast<float>(ratio[1]);
    a.flip_p = f(cfg, "augment.flip_p");
    a.jitter_p = f(cfg, "augment.jitter_p");
    a.brightness *= s;
    a.contrast *= s;
    a.saturation *= s;
    a.hue = std::min(0.5f, a.hue * s);
    a.grayscale_p = f(cfg, "augment.grayscale_p");
    if (global) {
      a.blur_p = static_cast<float>(cfg.get_list("augment.blur_p")[v]);
      a.solarize_p = static_cast<float>(cfg.get_list("augment.solarize_p")[v]);
    }
    a.mean = norm.mean;
    a.std = norm.std;
    data::validate(a);
  }
  return views;
}

data::PairConfig pair_config(const Config& in) {
  Config cfg = resolved(in);
  const std::string& g = cfg.get_string("pairs.generator");
  data::PairConfig p;
  p.views = augment_views(cfg);
  p.seed = static_cast<uint64_t>(cfg.get_int("run.seed"));
  if (g == "semantic") p.kind = data::PairKind::semantic;
  if (g == "mined") p.kind = data::PairKind::mined;
  if (g == "temporal") p.kind = data::PairKind::temporal;
  if (g == "overlap") {
    const bool zero = cfg.get_string("pairs.iou") == "zero";
    p.overlap.kind = zero ? data::OverlapConstraint::Kind::zero : data::OverlapConstraint::Kind::interval;
    p.overlap.lo = cfg.get_list("pairs.iou_range")[0];
    p.overlap.hi = cfg.get_list("pairs.iou_range")[1];
    p.overlap.max_tries = static_cast<int>(cfg.get_int("pairs.max_tries"));
  }
  p.semantic_mode =
      cfg.get_string("pairs.semantic_mode") == "matched" ? data::SemanticMode::matched : data::SemanticMode::all_pairs;
  p.mined_ratio = cfg.get_double("pairs.mined_ratio");
  p.mined_threshold = cfg.get_double("pairs.mined_threshold");
  p.min_gap = cfg.get_int("pairs.min_gap");
  p.max_gap = cfg.get_int("pairs.max_gap");
  return p;
}

std::string run_folder(const Config& cfg) {
  const std::string& out = cfg.get_string("run.output");
  return out.empty() ? "runs/" + cfg.get_string("run.name") : out;
}

// One process per GPU: under a launcher the rank's index among the ranks of its node picks it.
static Device local_gpu() {
  const int n = cuda::device_count();
  return Device::cuda(n > 0 ? dist::launch().local_rank % n : 0);
}

Device resolve_device(const Config& cfg) {
  const std::string& d = cfg.get_string("run.device");
  if (d == "cpu") return Device::cpu();
  if (d == "cuda") {
    if (!cuda::available()) fail("run.device = \"cuda\" but no GPU can be used: ", cuda::unavailable_reason(),
                                 "; set run.device = \"cpu\" or \"auto\"");
    return local_gpu();
  }
  if (d != "auto") fail("config: run.device must be auto, cpu or cuda, got '", d, "'");
  if (cuda::available()) return local_gpu();
  static std::once_flag told;
  if (dist::launch().rank == 0)
    std::call_once(told, [] { std::cerr << "siam: " << cuda::unavailable_reason() << "; running on the CPU\n"; });
  return Device::cpu();
}

void apply_threads(const Config& cfg) {
  int n = static_cast<int>(cfg.get_int("run.threads"));
  // Ranks sharing a node share its cores: mpirun -np 2 on 2 cores runs 2 threads in all, not 4.
  if (n <= 0 && dist::launch().local_size > 1) n = dist::default_threads();
  if (n <= 0) return;
  omp_set_num_threads(n);  // BLAS runs on one thread per call (kernels/cpu/blas.h)
}

Config checkpoint_config(const std::string& text, const std::string& source) {
  Config cfg = pretrain_config();
  cfg.load_string(text, source + " (its config)");
  resolve_defaults(cfg);
  return cfg;
}

LoadedBackbone load_backbone(const std::string& path) {
  nn::Checkpoint ck = nn::load_checkpoint(path);
  LoadedBackbone out{.module = nullptr, .feature_dim = 0, .config = checkpoint_config(ck.config, path),
                     .epoch = ck.epoch, .step = ck.step};
  ssl::Backbone b = make_backbone(out.config);
  try {
    b.module->load_state_dict(ck.section("backbone"));
  } catch (const Error& e) {
    fail(path, ": the backbone weights do not fit the architecture of its config (", out.config.get_string("backbone.arch"),
         "): ", e.what());
  }
  b.module->eval();
  out.module = b.module;
  out.feature_dim = b.feature_dim;
  return out;
}

// ---------------------------------------------------------------- pair sources

data::ImageSet subset(const data::ImageSet& s, const std::vector<int64_t>& idx) {
  data::ImageSet out = s;
  const int64_t n = static_cast<int64_t>(idx.size());
  const int64_t row = s.height() * s.width() * s.channels();
  out.images = empty({n, s.height(), s.width(), s.channels()}, {DType::u8});
  out.labels = empty({n}, {DType::i64});
  const Tensor src = contiguous(s.images), lab = contiguous(s.labels);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out.images.data<uint8_t>() + i * row, src.data<uint8_t>() + idx[i] * row, row);
    out.labels.data<int64_t>()[i] = lab.data<int64_t>()[idx[i]];
  }
  return out;
}

static data::Neighbours remap_neighbours(const data::Neighbours& nb, const std::vector<int64_t>& keep, int64_t n_all,
                                         const std::string& path) {
  if (nb.indices.dim() != 2 || nb.indices.size(0) != n_all)
    fail(path, ": the neighbour lists cover ", nb.indices.dim() == 2 ? nb.indices.size(0) : 0,
         " images, but the training set (data.limit applied) has ", n_all);
  std::vector<int64_t> to_new(n_all, -1);
  for (size_t i = 0; i < keep.size(); ++i) to_new[keep[i]] = static_cast<int64_t>(i);
  const int64_t k = nb.indices.size(1);
  data::Neighbours out{empty({static_cast<int64_t>(keep.size()), k}, {DType::i64}),
                       empty({static_cast<int64_t>(keep.size()), k}, {DType::f32})};
  const Tensor idx = contiguous(nb.indices), sim = contiguous(copy_to(nb.similarities, Device::cpu(), DType::f32));
  for (size_t i = 0; i < keep.size(); ++i)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t old = idx.data<int64_t>()[keep[i] * k + j];
      const bool usable = old >= 0 && old < n_all && to_new[old] >= 0;
      out.indices.data<int64_t>()[i * k + j] = usable ? to_new[old] : static_cast<int64_t>(i);
      out.similarities.data<float>()[i * k + j] =
          usable ? sim.data<float>()[keep[i] * k + j] : -std::numeric_limits<float>::infinity();
    }
  return out;
}

PairSource make_pair_source(const Config& cfg, const TrainSplit& keep) {
  const std::string gen = cfg.get_string("pairs.generator");
  const data::PairConfig pc = pair_config(cfg);
  const int size = static_cast<int>(cfg.get_int("data.image_size"));
  const data::DecodeOptions decode{.height = size, .width = size, .channels = static_cast<int>(cfg.get_int("data.channels"))};
  PairSource out;
  if (gen == "temporal") {
    data::VideoSet videos = data::load_video_folders(cfg.get_string("data.root"), decode);
    out.images = videos.frames;
    out.generator.emplace(pc, videos);
    return out;
  }
  if (!cfg.get_string("pairs.list").empty()) {
    data::PairList list = data::load_pair_list(cfg.get_string("pairs.list"), decode);
    out.images = list.images;
    out.generator.emplace(pc, list);
    return out;
  }
  const data::ImageSet all = load_train_set(cfg);
  std::vector<int64_t> kept;
  if (keep) {
    kept = keep(all);
    out.images = subset(all, kept);
  } else {
    kept.resize(static_cast<size_t>(all.size()));
    for (int64_t i = 0; i < all.size(); ++i) kept[static_cast<size_t>(i)] = i;
    out.images = all;
  }
  if (gen == "mined") {
    const std::string& path = cfg.get_string("pairs.neighbours");
    if (path.empty()) fail("config: pairs.generator = \"mined\" needs pairs.neighbours (a neighbour file) or pairs.mine_from");
    out.generator.emplace(pc, out.images, remap_neighbours(data::load_neighbours(path), kept, all.size(), path));
  } else {
    out.generator.emplace(pc, out.images);
  }
  return out;
}

}  // namespace siam::apps
