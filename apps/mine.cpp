#include "apps/mine.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/run_config.h"
#include "kernels/precision.h"

namespace siam::apps {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fixed(double v, int digits = 2) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

Device device_of(const nn::Module& m) {
  std::vector<Tensor> ps = m.parameters();
  return ps.empty() ? Device::cpu() : ps.front().device();
}

// A ViT only takes the image side its position embedding was made for; a ResNet takes any.
int input_size(const Config& cfg) {
  return cfg.get_string("backbone.arch").starts_with("vit") ? static_cast<int>(cfg.get_int("backbone.image_size")) : 0;
}

// The encoder's features of the un-augmented images, on the encoder's device.
Tensor encoder_features(nn::Module& backbone, const Config& encoder_cfg, const data::ImageSet& images,
                        const Normalisation& norm, int64_t batch_size) {
  const int64_t channels = encoder_cfg.get_int("backbone.in_channels");
  if (images.channels() != channels)
    fail("mine: the encoder takes ", channels, "-channel images, '", images.name, "' has ", images.channels());
  Tensor f = extract_features(backbone, images, norm, batch_size, input_size(encoder_cfg));
  return siam::to(f, device_of(backbone));
}

void make_parent(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail("mine: cannot create the folder ", parent.string(), " for ", path, ": ", ec.message());
}

}  // namespace

// ---------------------------------------------------------------- search

data::Neighbours nearest_neighbours(const Tensor& features, int64_t k, int64_t block) {
  if (!features.defined() || features.dim() != 2 || !is_floating(features.dtype()))
    fail("nearest neighbours: expected floating (N, D) features, got ",
         features.defined() ? shape_str(features.shape()) + " " + dtype_name(features.dtype()) : "undefined");
  const int64_t n = features.size(0);
  if (n < 2) fail("nearest neighbours: ", n, " image(s), expected at least 2 (an image is not its own neighbour)");
  if (k < 1) fail("nearest neighbours: k = ", k, ", expected >= 1");
  if (block < 1) fail("nearest neighbours: block = ", block, ", expected >= 1");
  const int64_t kk = std::min(k, n - 1);
  NoGradGuard no_grad;
  // Exact: f32 products on a GPU, not TF32's 10-bit ones (which reorder close neighbours).
  kernels::Tf32Guard strict(false);
  const Tensor f = contiguous(normalize(features, 1));  // (N, D)
  const Tensor ft = transpose(f, 0, 1);                 // (D, N)
  data::Neighbours out{empty({n, kk}, {DType::i64}), empty({n, kk}, {DType::f32})};
  int64_t* oi = out.indices.data<int64_t>();
  float* os = out.similarities.data<float>();
  for (int64_t start = 0; start < n; start += block) {
    const int64_t count = std::min(block, n - start);
    // The row's own image is somewhere in its top kk + 1 or ranks below all of them: dropping
    // it (or the last entry when it is absent) leaves the top kk of the other images, in order.
    auto [v, i] = topk(matmul(narrow(f, 0, start, count), ft), kk + 1);  // (count, kk + 1)
    const Tensor vals = copy_to(v, Device::cpu(), DType::f32), idx = copy_to(i, Device::cpu(), DType::i64);
    const float* vp = vals.data<float>();
    const int64_t* ip = idx.data<int64_t>();
    for (int64_t r = 0; r < count; ++r) {
      const int64_t self = start + r;
      int64_t j = 0;
      for (int64_t t = 0; t <= kk && j < kk; ++t) {
        const int64_t c = ip[r * (kk + 1) + t];
        if (c == self) continue;
        oi[self * kk + j] = c;
        os[self * kk + j] = vp[r * (kk + 1) + t];
        ++j;
      }
      SIAM_CHECK(j == kk, "nearest neighbours: row ", self, " got ", j, " of ", kk);
    }
  }
  return out;
}

NeighbourStats neighbour_stats(const data::Neighbours& nb, const Tensor& labels) {
  const Tensor idx = copy_to(nb.indices, Device::cpu(), DType::i64);
  const Tensor sim = copy_to(nb.similarities, Device::cpu(), DType::f64);
  const int64_t n = idx.size(0), k = idx.size(1);
  NeighbourStats s;
  if (n * k == 0) return s;
  const double* sp = sim.data<double>();
  double total = 0;
  for (int64_t e = 0; e < n * k; ++e) total += sp[e];
  s.mean_similarity = total / static_cast<double>(n * k);
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != n || n < 2) return s;
  const Tensor lab = copy_to(labels, Device::cpu(), DType::i64);
  const int64_t* lp = lab.data<int64_t>();
  std::map<int64_t, int64_t> count;
  for (int64_t i = 0; i < n; ++i) {
    if (lp[i] < 0) return s;  // an unlabelled set has no agreement to measure
    ++count[lp[i]];
  }
  const int64_t* ip = idx.data<int64_t>();
  int64_t same = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) same += lp[ip[i * k + j]] == lp[i];
  double pairs = 0;
  for (const auto& [label, c] : count) pairs += static_cast<double>(c) * static_cast<double>(c - 1);
  s.label_agreement = 100.0 * static_cast<double>(same) / static_cast<double>(n * k);
  s.chance = 100.0 * pairs / (static_cast<double>(n) * static_cast<double>(n - 1));
  return s;
}

// ---------------------------------------------------------------- siam mine

void run_mine(const MineCommand& c, std::ostream& out) {
  const auto t0 = Clock::now();
  if (c.input.checkpoint.empty())
    fail("mine: a checkpoint is required, e.g. siam mine runs/simclr/checkpoint.safetensors --out neighbours.safetensors");
  if (c.output.empty()) fail("mine: --out FILE.safetensors is required (the neighbour file to write)");
  if (c.k < 1) fail("mine: --k ", c.k, ", expected >= 1 neighbours per image");
  if (c.limit < 0) fail("mine: --limit ", c.limit, ", expected >= 0 (0: the checkpoint's data.limit)");
  if (c.block < 1) fail("mine: --block ", c.block, ", expected >= 1");
  if (c.input.batch_size < 1) fail("mine: --batch-size ", c.input.batch_size, ", expected >= 1");
  if (c.features != "backbone" && c.features != "random" && c.features != "pixels")
    fail("mine: --features ", c.features, ", expected backbone, random or pixels");
  LoadedBackbone lb = load_backbone(c.input.checkpoint);
  if (!c.dataset.empty()) {
    lb.config.set("data.dataset=" + toml_quote(c.dataset));
    lb.config.set("data.root=\"\"");  // the new data set's default folder, unless --set data.root
  }
  if (c.limit > 0) lb.config.set("data.limit=" + std::to_string(c.limit));
  for (const std::string& s : c.input.sets) {
    const std::string key = s.substr(0, s.find('='));
    if (!key.starts_with("data.") && key != "run.threads" && key != "run.device")
      fail("mine: --set ", s, ": only data.*, run.device and run.threads can change here (the backbone is the checkpoint's)");
    lb.config.set(s);
  }
  resolve_defaults(lb.config);
  apply_threads(lb.config);

  const Device device = resolve_device(lb.config);  // the search runs where the encoder does
  const data::ImageSet images = load_train_set(lb.config);
  const Normalisation norm = normalisation(lb.config);
  Tensor features;
  if (c.features == "pixels") {
    features = siam::to(pixel_features(images, norm), device);
  } else {
    nn::ModulePtr net = c.features == "random" ? make_backbone(lb.config).module : lb.module;
    if (!device.is_cpu()) net->to(device);
    features = encoder_features(*net, lb.config, images, norm, c.input.batch_size);
  }
  const data::Neighbours nb = nearest_neighbours(features, c.k, c.block);
  const int64_t k = nb.indices.size(1);
  const std::string dataset = lb.config.get_string("data.dataset");
  make_parent(c.output);
  data::save_neighbours(c.output, nb,
                        {{"checkpoint", c.input.checkpoint},
                         {"features", c.features},
                         {"dataset", dataset},
                         {"data_limit", std::to_string(lb.config.get_int("data.limit"))},
                         {"images", std::to_string(images.size())},
                         {"k", std::to_string(k)}});
  const NeighbourStats st = neighbour_stats(nb, images.labels);

  out << "mine: " << c.input.checkpoint << " (" << lb.config.get_string("method.name") << ", "
      << lb.config.get_string("backbone.arch") << ", epoch " << lb.epoch << "), " << c.features << " features of "
      << images.size() << " " << dataset << " images: " << k << " neighbours each"
      << (k < c.k ? " (all the other images)" : "") << ", mean cosine similarity " << fixed(st.mean_similarity, 4);
  if (st.label_agreement >= 0)
    out << ", " << fixed(st.label_agreement) << "% share the anchor's label (chance " << fixed(st.chance) << "%)";
  out << " -> " << c.output << "\n";
  nlohmann::ordered_json j{{"command", "mine"},
                           {"checkpoint", c.input.checkpoint},
                           {"arch", lb.config.get_string("backbone.arch")},
                           {"method", lb.config.get_string("method.name")},
                           {"epoch", lb.epoch},
                           {"dataset", dataset},
                           {"features", c.features},
                           {"images", images.size()},
                           {"k", k},
                           {"mean_similarity", st.mean_similarity}};
  if (st.label_agreement >= 0) {
    j["label_agreement"] = st.label_agreement;
    j["chance"] = st.chance;
  }
  j["output"] = c.output;
  j["time_s"] = seconds_since(t0);
  out << j.dump() << "\n";
}

// ---------------------------------------------------------------- pretrain's mining

std::string prepare_mined_neighbours(const Config& cfg) {
  if (cfg.get_string("pairs.generator") != "mined") return "";
  const std::string path = cfg.get_string("pairs.neighbours");
  const std::string from = cfg.get_string("pairs.mine_from");
  if (fs::exists(path))
    return from.empty() ? "" : "neighbours: reusing " + path + " (delete it to mine again from " + from + ")";
  if (from.empty())
    fail("config: pairs.neighbours file ", path, " does not exist; make it with `siam mine CHECKPOINT --out ", path,
         "`, or set pairs.mine_from = CHECKPOINT to mine it on the first run");
  const auto t0 = Clock::now();
  LoadedBackbone lb = load_backbone(from);
  const Device device = resolve_device(cfg);  // the run's device
  if (!device.is_cpu()) lb.module->to(device);
  const data::ImageSet images = load_train_set(cfg);
  const int64_t k = cfg.get_int("pairs.mine_k");
  const Tensor features = encoder_features(*lb.module, lb.config, images, normalisation(cfg), 256);
  const data::Neighbours nb = nearest_neighbours(features, k);
  make_parent(path);
  data::save_neighbours(path, nb,
                        {{"checkpoint", from},
                         {"features", "backbone"},
                         {"dataset", cfg.get_string("data.dataset")},
                         {"data_limit", std::to_string(cfg.get_int("data.limit"))},
                         {"images", std::to_string(images.size())},
                         {"k", std::to_string(nb.indices.size(1))}});
  const NeighbourStats st = neighbour_stats(nb, images.labels);
  std::ostringstream os;
  os << "neighbours: mined " << nb.indices.size(1) << " per image for " << images.size() << " images with "
     << from << " (" << lb.config.get_string("method.name") << ", " << lb.config.get_string("backbone.arch")
     << ") in " << fixed(seconds_since(t0), 1) << " s, mean similarity " << fixed(st.mean_similarity, 4);
  if (st.label_agreement >= 0)
    os << ", " << fixed(st.label_agreement) << "% share the anchor's label (chance " << fixed(st.chance) << "%)";
  os << "; saved to " << path << ", later runs reuse it";
  return os.str();
}

// ---------------------------------------------------------------- CLI

void add_mine_command(CLI::App& app) {
  auto c = std::make_shared<MineCommand>();
  auto* cmd = app.add_subcommand(
      "mine", "Mine each training image's nearest neighbours (cosine, exact) with a checkpoint's encoder: a neighbour "
              "file for pairs.generator = \"mined\"");
  cmd->add_option("checkpoint", c->input.checkpoint, "a checkpoint written by siam pretrain (its backbone embeds the images)")
      ->required();
  cmd->add_option("--out", c->output, "the neighbour file (.safetensors) to write")->required();
  cmd->add_option("--k", c->k, "neighbours per image (at most the other images)")->capture_default_str();
  cmd->add_option("--dataset", c->dataset,
                  "mine another data set's training images: fashion_mnist, mnist, cifar10, cifar100, stl10 or folder "
                  "(its default folder unless --set data.root=DIR)");
  cmd->add_option("--limit", c->limit, "only the first N training images (0: the checkpoint's data.limit); a run "
                                       "that uses the file must train on the same images")
      ->capture_default_str();
  cmd->add_option("--features", c->features, "backbone, random (same architecture, untrained) or pixels")
      ->capture_default_str();
  cmd->add_option("--set", c->input.sets,
                  "override a data key, run.device or run.threads of the checkpoint's config, e.g. --set data.root=DIR "
                  "(repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--batch-size", c->input.batch_size, "images per forward pass when extracting features")
      ->capture_default_str();
  cmd->add_option("--block", c->block, "query images per similarity block (one GEMM against all images)")
      ->capture_default_str();
  cmd->callback([c] { run_mine(*c, std::cout); });
}

}  // namespace siam::apps
