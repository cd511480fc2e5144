#include "apps/eval_commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/emd.h"
#include "apps/invariance.h"
#include "apps/plot.h"
#include "apps/pretrain.h"
#include "apps/run_config.h"
#include "data/preview.h"
#include "data/synthetic_video.h"
#include "tensor/safetensors.h"

namespace siam::apps {

namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Two decimals, as accuracies are read.
std::string fixed(double v, int digits = 2) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

// The checkpoint's backbone with its config, the allowed overrides applied and re-resolved.
LoadedBackbone load(const CheckpointInput& in, const char* command, const std::vector<std::string>& prefixes) {
  if (in.checkpoint.empty())
    fail(command, ": a checkpoint is required, e.g. siam ", command, " runs/simclr/checkpoint.safetensors");
  if (in.batch_size < 1) fail(command, ": --batch-size ", in.batch_size, ", expected >= 1");
  LoadedBackbone lb = load_backbone(in.checkpoint);
  for (const std::string& s : in.sets) {
    const std::string key = s.substr(0, s.find('='));
    bool allowed = false;
    std::string names;
    for (const std::string& p : prefixes) {
      allowed = allowed || (p.back() == '.' ? key.starts_with(p) : key == p);
      names += (names.empty() ? "" : ", ") + (p.back() == '.' ? p + "*" : p);
    }
    if (!allowed)
      fail(command, ": --set ", s, ": only ", names, " can change here (the backbone is the checkpoint's)");
    lb.config.set(s);
  }
  // A command that makes no pairs does not care how the checkpoint's were made; their settings
  // must not stop it from reading other data (temporal pairs need a video folder, for one).
  if (std::none_of(prefixes.begin(), prefixes.end(), [](const std::string& p) { return p == "pairs."; })) {
    lb.config.set("pairs.generator=\"augmentation\"");
    lb.config.set("pairs.list=\"\"");
  }
  resolve_defaults(lb.config);
  apply_threads(lb.config);
  return lb;
}

const std::vector<std::string> kDataKeys = {"data.", "run.threads"};

// A ViT only takes the image side its position embedding was made for; a ResNet takes any.
int input_size(const Config& cfg) {
  return cfg.get_string("backbone.arch").starts_with("vit") ? static_cast<int>(cfg.get_int("backbone.image_size")) : 0;
}

// The labelled images of a set (STL-10's training split may include the unlabeled images).
data::ImageSet labelled(const data::ImageSet& s, const char* command) {
  const std::vector<double> y = s.labels.to_vector();
  std::vector<int64_t> keep;
  for (size_t i = 0; i < y.size(); ++i)
    if (y[i] >= 0) keep.push_back(static_cast<int64_t>(i));
  if (keep.empty()) fail(command, ": '", s.name, "' has no labelled image");
  if (static_cast<int64_t>(keep.size()) == s.size()) return s;
  data::ImageSet out = s;
  Tensor idx = from_vector(std::vector<double>(keep.begin(), keep.end()), {static_cast<int64_t>(keep.size())},
                           {DType::i64});
  out.images = contiguous(index_select(s.images, 0, idx));
  out.labels = index_select(s.labels, 0, idx);
  return out;
}

json checkpoint_json(const char* command, const CheckpointInput& in, const LoadedBackbone& lb) {
  return json{{"command", command},
              {"checkpoint", in.checkpoint},
              {"arch", lb.config.get_string("backbone.arch")},
              {"method", lb.config.get_string("method.name")},
              {"epoch", lb.epoch},
              {"dataset", lb.config.get_string("data.dataset")}};
}

std::string describe(const CheckpointInput& in, const LoadedBackbone& lb) {
  return in.checkpoint + " (" + lb.config.get_string("method.name") + ", " + lb.config.get_string("backbone.arch") +
         ", epoch " + std::to_string(lb.epoch) + ")";
}

// Train and test features for the probes: the checkpoint's backbone, the same architecture
// freshly initialised (from run.seed), or the raw pixels.
struct Features {
  Tensor train{}, test{}, train_labels{}, test_labels{};
  int num_classes = 0;
};
Features probe_features(const char* command, const std::string& which, LoadedBackbone& lb, const CheckpointInput& in) {
  if (which != "backbone" && which != "random" && which != "pixels")
    fail(command, ": --features ", which, ", expected backbone, random or pixels");
  const data::ImageSet train = labelled(load_train_set(lb.config), command), test = load_test_set(lb.config);
  if (test.num_classes != train.num_classes)
    fail(command, ": the test split has ", test.num_classes, " classes, the training split ", train.num_classes);
  const Normalisation norm = normalisation(lb.config);
  Features f{.train_labels = train.labels, .test_labels = test.labels, .num_classes = train.num_classes};
  if (which == "pixels") {
    f.train = pixel_features(train, norm);
    f.test = pixel_features(test, norm);
    return f;
  }
  nn::ModulePtr net = which == "random" ? make_backbone(lb.config).module : lb.module;
  // Under mpirun / srun the ranks share the embedding work (every rank gets all features).
  f.train = extract_features(*net, train, norm, in.batch_size, input_size(lb.config), dist::world());
  f.test = extract_features(*net, test, norm, in.batch_size, input_size(lb.config), dist::world());
  return f;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

}  // namespace

// ---------------------------------------------------------------- knn, linear, finetune

void run_knn(const KnnCommand& c, std::ostream& out) {
  const auto t0 = Clock::now();
  LoadedBackbone lb = load(c.input, "knn", kDataKeys);
  Features f = probe_features("knn", c.features, lb, c.input);
  std::vector<KnnResult> r = knn_eval(f.train, f.train_labels, f.test, f.test_labels, f.num_classes,
                                      {.k = c.k, .temperature = c.temperature, .batch_size = c.input.batch_size});
  std::ostringstream human;
  human << "knn: " << describe(c.input, lb) << ", " << c.features << " features, " << f.train.size(0) << " train / "
        << f.test.size(0) << " test images, T = " << c.temperature << ": top-1";
  json top1 = json::object();
  for (size_t j = 0; j < r.size(); ++j) {
    human << (j ? "," : "") << " " << fixed(r[j].top1) << "% (k = " << r[j].k << ")";
    top1[std::to_string(r[j].k)] = r[j].top1;
  }
  json j = checkpoint_json("knn", c.input, lb);
  j["features"] = c.features;
  j["train_images"] = f.train.size(0);
  j["test_images"] = f.test.size(0);
  j["temperature"] = c.temperature;
  j["top1"] = top1;
  j["time_s"] = seconds_since(t0);
  out << human.str() << "\n" << j.dump() << "\n";
}

void run_linear(const LinearCommand& c, std::ostream& out) {
  const auto t0 = Clock::now();
  LoadedBackbone lb = load(c.input, "linear", kDataKeys);
  Features f = probe_features("linear", c.features, lb, c.input);
  LinearProbeResult r = linear_probe(f.train, f.train_labels, f.test, f.test_labels, f.num_classes, c.probe);
  out << "linear: " << describe(c.input, lb) << ", " << c.features << " features, " << f.train.size(0) << " train / "
      << f.test.size(0) << " test images, " << c.probe.epochs << " epochs: top-1 " << fixed(r.test_top1)
      << "% (train " << fixed(r.train_top1) << "%, last epoch loss " << fixed(r.epoch_loss.back(), 4) << ")\n";
  json j = checkpoint_json("linear", c.input, lb);
  j["features"] = c.features;
  j["train_images"] = f.train.size(0);
  j["test_images"] = f.test.size(0);
  j["epochs"] = c.probe.epochs;
  j["lr"] = c.probe.lr;
  j["batch_size"] = c.probe.batch_size;
  j["weight_decay"] = c.probe.weight_decay;
  j["standardise"] = c.probe.standardise;
  j["top1"] = r.test_top1;
  j["train_top1"] = r.train_top1;
  j["final_loss"] = r.epoch_loss.back();
  j["time_s"] = seconds_since(t0);
  out << j.dump() << "\n";
}

double parse_label_share(const std::string& text) {
  const std::string t = text.ends_with('%') ? text.substr(0, text.size() - 1) : "";
  size_t used = 0;
  double p = 0;
  try {
    p = std::stod(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (t.empty() || used != t.size() || !(p > 0 && p <= 100))
    fail("finetune: --labels ", text, ", expected a share of the labels in (0%, 100%], e.g. 1% or 10%");
  return p / 100.0;
}

void run_finetune(const FinetuneCommand& c, std::ostream& out) {
  const auto t0 = Clock::now();
  FinetuneOptions o = c.options;
  o.fraction = parse_label_share(c.labels);
  LoadedBackbone lb = load(c.input, "finetune", kDataKeys);
  o.input_size = input_size(lb.config);
  const data::ImageSet train = labelled(load_train_set(lb.config), "finetune"), test = load_test_set(lb.config);
  FinetuneResult r = finetune(*lb.module, lb.feature_dim, train, test, normalisation(lb.config), o);
  out << "finetune: " << describe(c.input, lb) << ", " << c.labels << " of the labels (" << r.labelled << " of "
      << train.size() << " images), " << o.epochs << " epochs: top-1 " << fixed(r.test_top1) << "% on "
      << test.size() << " test images (last epoch loss " << fixed(r.epoch_loss.back(), 4) << ")\n";
  json j = checkpoint_json("finetune", c.input, lb);
  j["labels"] = c.labels;
  j["labelled_images"] = r.labelled;
  j["test_images"] = test.size();
  j["epochs"] = o.epochs;
  j["lr"] = o.lr;
  j["batch_size"] = o.batch_size;
  j["top1"] = r.test_top1;
  j["final_loss"] = r.epoch_loss.back();
  j["time_s"] = seconds_since(t0);
  out << j.dump() << "\n";
}

// ---------------------------------------------------------------- invariance

void run_invariance(const InvarianceCommand& c, std::ostream& out) {
  const auto t0 = Clock::now();
  LoadedBackbone lb = load(c.input, "invariance", kDataKeys);
  const Normalisation norm = normalisation(lb.config);
  std::vector<InvarianceSets> all;
  if (!c.folder.empty()) {
    // Sets from a folder are decoded at the side the backbone was trained on.
    const int side = static_cast<int>(lb.config.get_int("augment.crop_size"));
    const int channels = static_cast<int>(lb.config.get_int("backbone.in_channels"));
    all.push_back(load_invariance_folder(c.folder, {.height = side, .width = side, .channels = channels}));
  } else {
    if (c.kinds.empty()) fail("invariance: --sets is empty, expected some of occlusion, viewpoint, illumination, instance");
    const data::ImageSet source = labelled(load_test_set(lb.config), "invariance");
    for (const std::string& k : c.kinds)
      all.push_back(make_invariance_sets(source, parse_transformation(k), c.limit, c.levels, c.seed));
  }
  if (c.features != "backbone" && c.features != "random")
    fail("invariance: --features ", c.features, ", expected backbone or random");
  const nn::ModulePtr net = c.features == "random" ? make_backbone(lb.config).module : lb.module;
  json j = checkpoint_json("invariance", c.input, lb);
  j["features"] = c.features;
  json results = json::object();
  for (const InvarianceSets& s : all) {
    Tensor f = extract_features(*net, s.images, norm, c.input.batch_size, input_size(lb.config));
    InvarianceScore r = invariance_score(f, s.set_start, s.set_class, s.num_classes, c.k);
    out << "invariance " << s.name << ": " << describe(c.input, lb) << ", " << s.num_sets() << " sets ("
        << r.sets_used << " of 3+ images) in " << s.num_classes << " classes, percentile " << fixed(r.percentile, 1)
        << ": score";
    json scores = json::object();
    for (size_t q = 0; q < r.k.size(); ++q) {
      out << (q ? "," : "") << " " << fixed(r.score[q]) << " (K = " << r.k[q] << ")";
      scores[std::to_string(r.k[q])] = r.score[q];
    }
    out << "\n";
    results[s.name] = json{{"sets", s.num_sets()},       {"sets_used", r.sets_used},
                           {"images", s.images.size()},  {"classes_scored", r.classes_scored},
                           {"percentile", r.percentile}, {"score", scores}};
  }
  j["results"] = results;
  j["time_s"] = seconds_since(t0);
  out << j.dump() << "\n";
}

// ---------------------------------------------------------------- view-emd

void run_view_emd(const ViewEmdCommand& c, std::ostream& out) {
  const auto t0 = Clock::now();
  CheckpointInput in = c.input;
  if (!c.pairs.empty()) in.sets.insert(in.sets.begin(), "pairs.generator=" + c.pairs);
  LoadedBackbone lb = load(in, "view-emd", {"data.", "augment.", "pairs.", "run.seed", "run.threads"});
  auto [images, gen] = make_pair_source(lb.config);
  const std::vector<double> v = view_emd(*lb.module, images, *gen, c.n, std::min<int64_t>(c.input.batch_size, 64));
  const Summary s = summarize(v);
  const std::string name = lb.config.get_string("pairs.generator");
  out << "view-emd: " << describe(c.input, lb) << ", " << name << " pairs, " << s.count
      << " pairs: EMD mean " << fixed(s.mean, 4) << ", std " << fixed(s.std, 4) << ", min " << fixed(s.min, 4)
      << ", quartiles " << fixed(s.q1, 4) << " / " << fixed(s.median, 4) << " / " << fixed(s.q3, 4) << ", max "
      << fixed(s.max, 4) << "\n";
  json j = checkpoint_json("view-emd", c.input, lb);
  j["pairs"] = name;
  j["count"] = s.count;
  j["emd"] = json{{"mean", s.mean}, {"std", s.std},       {"min", s.min}, {"q1", s.q1},
                  {"median", s.median}, {"q3", s.q3}, {"max", s.max}};
  j["time_s"] = seconds_since(t0);
  out << j.dump() << "\n";
}

// ---------------------------------------------------------------- export

void export_backbone(const std::string& path, const nn::Module& backbone, const ssl::BackboneConfig& cfg,
                     int64_t feature_dim, const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> meta = extra;
  meta["format"] = "siam.backbone";
  meta["arch"] = cfg.arch;
  meta["in_channels"] = std::to_string(cfg.in_channels);
  meta["small_input"] = cfg.small_input ? "true" : "false";
  meta["width"] = std::to_string(cfg.width);
  meta["image_size"] = std::to_string(cfg.image_size);
  meta["patch"] = std::to_string(cfg.patch);
  meta["feature_dim"] = std::to_string(feature_dim);
  std::map<std::string, Tensor> sd;
  for (const auto& [name, t] : backbone.state_dict()) sd[name] = copy_to(t, Device::cpu(), t.dtype());
  save_safetensors(path, sd, meta);
}

void run_export(const ExportCommand& c, std::ostream& out) {
  if (c.checkpoint.empty()) fail("export: a checkpoint is required, e.g. siam export runs/simclr/checkpoint.safetensors --output backbone.safetensors");
  if (c.output.empty()) fail("export: --output FILE.safetensors is required");
  LoadedBackbone lb = load_backbone(c.checkpoint);
  const ssl::BackboneConfig bc = backbone_config(lb.config);
  export_backbone(c.output, *lb.module, bc, lb.feature_dim,
                  {{"checkpoint", c.checkpoint}, {"epoch", std::to_string(lb.epoch)}, {"step", std::to_string(lb.step)},
                   {"method", lb.config.get_string("method.name")}});
  const auto sd = lb.module->state_dict();
  out << "export: " << c.checkpoint << " (" << lb.config.get_string("method.name") << ", " << bc.arch << ", epoch "
      << lb.epoch << "): " << sd.size() << " tensors, " << lb.module->num_parameters() << " parameters -> "
      << c.output << "\n";
  json j{{"command", "export"},       {"checkpoint", c.checkpoint}, {"arch", bc.arch},
         {"epoch", lb.epoch},         {"tensors", sd.size()},      {"parameters", lb.module->num_parameters()},
         {"output", c.output}};
  out << j.dump() << "\n";
}

// ---------------------------------------------------------------- plot, preview

void run_plot(const PlotCommand& c, std::ostream& out) {
  plot_runs(c.runs, c.output);
  out << "plot: " << c.runs.size() << " run" << (c.runs.size() == 1 ? "" : "s") << " (" << join(c.runs) << ") -> "
      << c.output << "\n";
  out << json{{"command", "plot"}, {"runs", c.runs}, {"output", c.output}}.dump() << "\n";
}

void run_preview(const PreviewCommand& c, std::ostream& out) {
  if (c.config.empty()) fail("preview: --config CONFIG is required");
  if (c.output.empty()) fail("preview: --output FILE.png is required");
  const Config cfg = load_run_config(c.config, c.sets);
  auto [images, gen] = make_pair_source(cfg);
  data::write_preview(c.output, images, *gen, c.epoch, c.rows);
  const int64_t rows = std::min(c.rows, gen->rows_per_epoch());
  out << "preview: " << c.config << " (" << cfg.get_string("pairs.generator") << " pairs, " << gen->num_views()
      << " views): " << rows << " rows of epoch " << c.epoch << " -> " << c.output << "\n";
  out << json{{"command", "preview"}, {"config", c.config},     {"pairs", cfg.get_string("pairs.generator")},
              {"views", gen->num_views()}, {"rows", rows}, {"epoch", c.epoch}, {"output", c.output}}
             .dump()
      << "\n";
}

// ---------------------------------------------------------------- make-videos

void run_make_videos(const MakeVideosCommand& c, std::ostream& out) {
  if (c.output.empty()) fail("make-videos: --out DIR is required");
  if (c.split != "train" && c.split != "test") fail("make-videos: --split must be train or test, got '", c.split, "'");
  const auto t0 = Clock::now();
  std::vector<std::string> sets = c.sets;
  sets.push_back("data.heldout=0");
  sets.push_back("run.knn_every=0");
  const Config cfg = load_run_config("", sets);
  const data::ImageSet source = c.split == "train" ? load_train_set(cfg) : load_test_set(cfg);
  data::VideoSynthesis s;
  s.clips = c.clips;
  s.frames = c.frames;
  s.seed = c.seed;
  const int64_t n = data::write_synthetic_videos(source, c.output, s);
  out << "make-videos: " << c.clips << " clips of " << c.frames << " frames (" << n << " PNG files) from "
      << cfg.get_string("data.dataset") << " " << c.split << " in " << c.output << "\n";
  json j{{"command", "make-videos"}, {"output", c.output}, {"clips", c.clips}, {"frames", c.frames},
         {"dataset", cfg.get_string("data.dataset")}, {"split", c.split}, {"seed", c.seed}, {"time_s", seconds_since(t0)}};
  out << j.dump() << "\n";
}

// ---------------------------------------------------------------- CLI

namespace {

// Under mpirun / srun only rank 0 reports; the other ranks share the feature extraction and
// compute the same result beside it.
std::ostream& rank0_out() {
  static std::ostringstream sink;
  if (dist::world().rank() == 0) return std::cout;
  sink.str("");
  return sink;
}

void add_checkpoint_options(CLI::App* cmd, CheckpointInput& in, const char* set_help) {
  cmd->add_option("checkpoint", in.checkpoint, "a checkpoint written by siam pretrain")->required();
  cmd->add_option("--set", in.sets, set_help)->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--batch-size", in.batch_size, "images per forward pass when extracting features")
      ->capture_default_str();
}

const char* kDataSetHelp =
    "override a data key of the checkpoint's config, e.g. --set data.dataset=mnist --set data.root=DIR (transfer; "
    "repeatable)";

}  // namespace

void add_eval_commands(CLI::App& app) {
  {
    auto c = std::make_shared<KnnCommand>();
    auto* cmd = app.add_subcommand("knn", "Weighted kNN top-1 of a checkpoint's frozen features (DINO's protocol)");
    add_checkpoint_options(cmd, c->input, kDataSetHelp);
    cmd->add_option("--k", c->k, "neighbours, comma-separated")->delimiter(',')->capture_default_str();
    cmd->add_option("--temperature", c->temperature, "vote weight exp(sim / T)")->capture_default_str();
    cmd->add_option("--features", c->features, "backbone, random (same architecture, untrained) or pixels")
        ->capture_default_str();
    cmd->callback([c] { run_knn(*c, rank0_out()); });
  }
  {
    auto c = std::make_shared<LinearCommand>();
    auto* cmd = app.add_subcommand("linear", "Linear probe on a checkpoint's frozen features: top-1 on the test split");
    add_checkpoint_options(cmd, c->input, kDataSetHelp);
    cmd->add_option("--epochs", c->probe.epochs, "training epochs")->capture_default_str();
    cmd->add_option("--lr", c->probe.lr, "SGD learning rate (cosine to 0 over the run)")->capture_default_str();
    cmd->add_option("--probe-batch", c->probe.batch_size, "SGD batch size")->capture_default_str();
    cmd->add_option("--weight-decay", c->probe.weight_decay, "SGD weight decay")->capture_default_str();
    cmd->add_option("--momentum", c->probe.momentum, "SGD momentum")->capture_default_str();
    auto raw = std::make_shared<bool>(false);
    cmd->add_flag("--no-standardise", *raw, "train on the raw features (default: standardised with the train split)");
    cmd->add_option("--seed", c->probe.seed, "initial weights and batch order")->capture_default_str();
    cmd->add_option("--features", c->features, "backbone, random (same architecture, untrained) or pixels")
        ->capture_default_str();
    cmd->callback([c, raw] {
      c->probe.standardise = !*raw;
      run_linear(*c, rank0_out());
    });
  }
  {
    auto c = std::make_shared<FinetuneCommand>();
    auto* cmd = app.add_subcommand("finetune", "Semi-supervised: fine-tune the whole network on 1% or 10% of the labels");
    add_checkpoint_options(cmd, c->input, kDataSetHelp);
    cmd->add_option("--labels", c->labels, "share of the training labels, class-balanced: 1% or 10%")->required();
    cmd->add_option("--epochs", c->options.epochs, "training epochs")->capture_default_str();
    cmd->add_option("--lr", c->options.lr, "SGD learning rate (cosine to 0 over the run)")->capture_default_str();
    cmd->add_option("--finetune-batch", c->options.batch_size, "SGD batch size")->capture_default_str();
    cmd->add_option("--weight-decay", c->options.weight_decay, "SGD weight decay")->capture_default_str();
    cmd->add_option("--seed", c->options.seed, "labelled subset, head, batch order and crops")->capture_default_str();
    cmd->callback([c] { run_finetune(*c, std::cout); });
  }
  {
    auto c = std::make_shared<InvarianceCommand>();
    auto* cmd = app.add_subcommand("invariance", "Invariance score of a checkpoint's features (Demystifying contrastive SSL)");
    add_checkpoint_options(cmd, c->input, kDataSetHelp);
    auto* kinds = cmd->add_option("--sets", c->kinds, "sets built from the test split: occlusion, viewpoint, illumination, instance")
                      ->delimiter(',')
                      ->capture_default_str();
    cmd->add_option("--folder", c->folder, "a folder of sets instead: DIR/<class>/<set>/<image>")->excludes(kinds);
    cmd->add_option("--limit", c->limit, "sets per class built from the test split")->capture_default_str();
    cmd->add_option("--features", c->features, "backbone, or random (the architecture freshly initialised)")
        ->capture_default_str();
    cmd->add_option("--levels", c->levels, "images per built set (transformation levels)")->capture_default_str();
    cmd->add_option("--k", c->k, "top-K neurons, comma-separated")->delimiter(',')->capture_default_str();
    cmd->add_option("--seed", c->seed, "which test images become targets, occluder positions")->capture_default_str();
    cmd->callback([c] { run_invariance(*c, std::cout); });
  }
  {
    auto c = std::make_shared<ViewEmdCommand>();
    auto* cmd = app.add_subcommand("view-emd", "EMD between the two views' backbone feature maps over many pairs");
    add_checkpoint_options(cmd, c->input,
                           "override a data.*, augment.*, pairs.* key or run.seed of the checkpoint's config, e.g. "
                           "--set pairs.iou=interval --set 'pairs.iou_range=[0.2, 0.4]' (repeatable)");
    cmd->add_option("--pairs", c->pairs,
                    "pair generator: augmentation, semantic, mined, overlap, temporal or multicrop (default: the "
                    "checkpoint's)");
    cmd->add_option("--n", c->n, "pairs measured (the first of epoch 0)")->capture_default_str();
    cmd->callback([c] { run_view_emd(*c, std::cout); });
  }
  {
    auto c = std::make_shared<ExportCommand>();
    auto* cmd = app.add_subcommand("export", "Write a checkpoint's backbone as safetensors with torchvision / timm names");
    cmd->add_option("checkpoint", c->checkpoint, "a checkpoint written by siam pretrain")->required();
    cmd->add_option("--output", c->output, "the .safetensors file to write")->required();
    cmd->callback([c] { run_export(*c, std::cout); });
  }
  {
    auto c = std::make_shared<PlotCommand>();
    auto* cmd = app.add_subcommand("plot", "PNG of training curves (loss, lr, kNN) of run folders side by side (gnuplot)");
    cmd->add_option("runs", c->runs, "run folders holding metrics.jsonl")->required();
    cmd->add_option("--output", c->output, "the PNG to write")->capture_default_str();
    cmd->callback([c] { run_plot(*c, std::cout); });
  }
  {
    auto c = std::make_shared<MakeVideosCommand>();
    auto* cmd = app.add_subcommand("make-videos",
                                   "Synthetic clips from a data set's images (moving, turning, scaling, relit): a "
                                   "folder of <clip>/<frame>.png for temporal pairs");
    cmd->add_option("--out", c->output, "the folder to write")->required();
    cmd->add_option("--set", c->sets, "the source data, e.g. --set data.dataset='\"fashion_mnist\"' (repeatable)")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    cmd->add_option("--split", c->split, "train or test")->capture_default_str();
    cmd->add_option("--clips", c->clips, "clips; clip i shows image i")->capture_default_str();
    cmd->add_option("--frames", c->frames, "frames per clip")->capture_default_str();
    cmd->add_option("--seed", c->seed, "seed of the motions")->capture_default_str();
    cmd->callback([c] { run_make_videos(*c, rank0_out()); });
  }
  {
    auto c = std::make_shared<PreviewCommand>();
    auto* cmd = app.add_subcommand("preview", "PNG contact sheet of the views a config's pair generator makes");
    cmd->add_option("--config", c->config, "the run's TOML config")->required();
    cmd->add_option("--set", c->sets, "override a config key (repeatable)")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    cmd->add_option("--output", c->output, "the PNG to write")->capture_default_str();
    cmd->add_option("--rows", c->rows, "training rows drawn")->capture_default_str();
    cmd->add_option("--epoch", c->epoch, "epoch whose order and views are drawn")->capture_default_str();
    cmd->callback([c] { run_preview(*c, std::cout); });
  }
}

}  // namespace siam::apps
