#include "data/pairs.h"

#include <algorithm>

#include "tensor/rng.h"
#include "tensor/safetensors.h"

namespace siam::data {

namespace {

// Counter layout limits (see pairs.h): offset = epoch << 44 | row << 20 | slot << 4.
constexpr int64_t kMaxEpochs = int64_t{1} << 20;
constexpr int64_t kMaxRows = int64_t{1} << 24;
constexpr int64_t kMaxSlots = int64_t{1} << 16;

// splitmix64: the epoch shuffle uses its own Philox key so it never shares words with views.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

const char* kind_word(OverlapConstraint::Kind k) {
  switch (k) {
    case OverlapConstraint::Kind::any: return "any";
    case OverlapConstraint::Kind::zero: return "zero";
    case OverlapConstraint::Kind::interval: return "interval";
  }
  return "?";
}

}  // namespace

const char* pair_kind_name(PairKind k) {
  switch (k) {
    case PairKind::augmentation: return "augmentation";
    case PairKind::semantic: return "semantic";
    case PairKind::mined: return "mined";
    case PairKind::temporal: return "temporal";
  }
  return "?";
}

// ---------------------------------------------------------------- neighbour lists

void save_neighbours(const std::string& path, const Neighbours& nb, const std::map<std::string, std::string>& extra) {
  if (!nb.indices.defined() || !nb.similarities.defined() || nb.indices.dim() != 2 ||
      nb.indices.dtype() != DType::i64 || nb.similarities.dtype() != DType::f32 ||
      nb.indices.shape() != nb.similarities.shape())
    fail("save_neighbours ", path, ": expected indices (N, k) i64 and similarities (N, k) f32");
  std::map<std::string, std::string> meta = extra;
  meta["format"] = "siam.neighbours";
  meta["format_version"] = "1";
  save_safetensors(path, {{"indices", nb.indices}, {"similarities", nb.similarities}}, meta);
}

Neighbours load_neighbours(const std::string& path) {
  SafeTensors st = load_safetensors(path);
  auto it = st.metadata.find("format");
  if (it == st.metadata.end() || it->second != "siam.neighbours")
    fail(path, ": not a neighbour list: metadata format is '", it == st.metadata.end() ? "" : it->second,
         "', expected 'siam.neighbours'");
  Neighbours nb{st.at("indices"), st.at("similarities")};
  if (nb.indices.dim() != 2 || nb.indices.dtype() != DType::i64)
    fail(path, ": indices is ", shape_str(nb.indices.shape()), " ", dtype_name(nb.indices.dtype()),
         ", expected (N, k) i64");
  if (nb.similarities.shape() != nb.indices.shape() || nb.similarities.dtype() != DType::f32)
    fail(path, ": similarities is ", shape_str(nb.similarities.shape()), " ", dtype_name(nb.similarities.dtype()),
         ", expected ", shape_str(nb.indices.shape()), " f32 like indices");
  return nb;
}

// ---------------------------------------------------------------- construction

void PairGenerator::init(const ImageSet& images) {
  const Tensor& im = images.images;
  if (!im.defined() || im.dim() != 4 || im.dtype() != DType::u8 || !im.is_contiguous())
    fail("pair generator: images of '", images.name, "' are ", im.defined() ? shape_str(im.shape()) : "undefined",
         ", expected a contiguous (N, H, W, C) u8 tensor");
  if (images.channels() != 1 && images.channels() != 3)
    fail("pair generator: '", images.name, "' has ", images.channels(), " channels, expected 1 or 3");
  if (images.size() == 0) fail("pair generator: '", images.name, "' has no images");
  num_images_ = images.size();
  src_h_ = images.height();
  src_w_ = images.width();
  if (cfg_.views.size() < 2)
    fail("pair generator: ", cfg_.views.size(), " view recipes, expected 2 (pairs) or 2 + N (multi-crop)");
  for (const AugmentConfig& v : cfg_.views) validate(v);
  const OverlapConstraint& o = cfg_.overlap;
  if (o.kind != OverlapConstraint::Kind::any) {
    if (cfg_.kind != PairKind::augmentation)
      fail("pair generator: an overlap constraint (", kind_word(o.kind), ") needs two views of one image, the pair kind is ",
           pair_kind_name(cfg_.kind));
    if (o.kind == OverlapConstraint::Kind::interval && !(o.lo >= 0 && o.lo <= o.hi && o.hi <= 1))
      fail("pair generator: IoU interval [", o.lo, ", ", o.hi, "], expected 0 <= lo <= hi <= 1");
    if (o.max_tries < 1 || 1 + int64_t{o.max_tries} * num_views() >= kMaxSlots)
      fail("pair generator: overlap max_tries is ", o.max_tries, ", expected 1 .. ", (kMaxSlots - 2) / num_views());
  }
  const Tensor& lab = images.labels;
  if (lab.defined()) {
    if (lab.dim() != 1 || lab.size(0) != num_images_ || lab.dtype() != DType::i64)
      fail("pair generator: labels of '", images.name, "' are ", shape_str(lab.shape()), " ", dtype_name(lab.dtype()),
           ", expected (", num_images_, ") i64");
    const int64_t* l = lab.data<int64_t>();
    labels_.assign(l, l + num_images_);
  } else {
    labels_.assign(num_images_, -1);
  }
}

PairGenerator::PairGenerator(const PairConfig& cfg, const ImageSet& images) : cfg_(cfg) {
  init(images);
  if (cfg_.kind == PairKind::augmentation) {
    rows_ = num_images_;
  } else if (cfg_.kind == PairKind::semantic) {
    for (int64_t i = 0; i < num_images_; ++i)
      if (labels_[i] < 0)
        fail("semantic pairs: image ", i, " of '", images.name, "' has no label (", labels_[i],
             "); pairs from labels need a labelled set");
    // Groups = classes: images sorted by label, a group starting at each new label.
    group_items_.resize(num_images_);
    for (int64_t i = 0; i < num_images_; ++i) group_items_[i] = i;
    std::stable_sort(group_items_.begin(), group_items_.end(),
                     [&](int64_t a, int64_t b) { return labels_[a] < labels_[b]; });
    group_of_.resize(num_images_);
    for (int64_t k = 0; k < num_images_; ++k) {
      if (k == 0 || labels_[group_items_[k]] != labels_[group_items_[k - 1]]) group_start_.push_back(k);
      group_of_[group_items_[k]] = static_cast<int64_t>(group_start_.size()) - 1;
    }
    group_start_.push_back(num_images_);
    const int64_t classes = static_cast<int64_t>(group_start_.size()) - 1;
    auto class_name = [&](int64_t g) {
      int64_t label = labels_[group_items_[group_start_[g]]];
      return label < static_cast<int64_t>(images.class_names.size()) ? images.class_names[label] : std::to_string(label);
    };
    if (cfg_.semantic_mode == SemanticMode::matched) {
      for (int64_t c = 0; c < classes; ++c)
        if (group_start_[c + 1] - group_start_[c] == 1)
          fail("semantic pairs (matched): class '", class_name(c), "' of '", images.name,
               "' has one image, expected at least 2 so that it has a partner");
      rows_ = num_images_;
    } else {
      int64_t total = 0;
      for (int64_t c = 0; c < classes; ++c) {
        int64_t n = group_start_[c + 1] - group_start_[c];
        total += n * (n - 1) / 2;
        if (total >= kMaxRows)
          fail("semantic pairs (all_pairs): '", images.name, "' gives more than ", kMaxRows,
               " same-class pairs per epoch; use the matched mode");
      }
      if (total == 0) fail("semantic pairs (all_pairs): no class of '", images.name, "' has two images");
      for (int64_t c = 0; c < classes; ++c)
        for (int64_t a = group_start_[c]; a < group_start_[c + 1]; ++a)
          for (int64_t b = a + 1; b < group_start_[c + 1]; ++b) pairs_.push_back({group_items_[a], group_items_[b]});
      rows_ = total;
    }
  } else {
    fail("pair generator: kind ", pair_kind_name(cfg_.kind), " needs ",
         cfg_.kind == PairKind::mined ? "a neighbour list (load_neighbours)" : "a VideoSet (load_video_folders)");
  }
}

PairGenerator::PairGenerator(const PairConfig& cfg, const PairList& list) : cfg_(cfg) {
  init(list.images);
  if (cfg_.kind != PairKind::semantic && cfg_.kind != PairKind::augmentation)
    fail("pair generator: a pair list gives semantic pairs or their augmentation baseline, not ",
         pair_kind_name(cfg_.kind), " pairs");
  for (size_t p = 0; p < list.pairs.size(); ++p)
    for (int64_t i : list.pairs[p])
      if (i < 0 || i >= num_images_)
        fail("pair list '", list.images.name, "': pair ", p, " names image ", i, ", expected 0..", num_images_ - 1);
  if (list.pairs.empty()) fail("pair list '", list.images.name, "' has no pairs");
  if (static_cast<int64_t>(list.pairs.size()) >= kMaxRows)
    fail("pair list '", list.images.name, "' has ", list.pairs.size(), " pairs, more than the ", kMaxRows, " supported");
  pairs_ = list.pairs;
  from_list_ = true;
  rows_ = static_cast<int64_t>(pairs_.size());
}

PairGenerator::PairGenerator(const PairConfig& cfg, const ImageSet& images, const Neighbours& nb) : cfg_(cfg) {
  init(images);
  if (cfg_.kind != PairKind::mined)
    fail("pair generator: a neighbour list is for mined pairs, the pair kind is ", pair_kind_name(cfg_.kind));
  if (!(cfg_.mined_ratio >= 0 && cfg_.mined_ratio <= 1))
    fail("mined pairs: mined_ratio is ", cfg_.mined_ratio, ", expected a share in [0, 1]");
  if (!nb.indices.defined() || nb.indices.dim() != 2 || nb.indices.dtype() != DType::i64 ||
      !nb.similarities.defined() || nb.similarities.shape() != nb.indices.shape() ||
      nb.similarities.dtype() != DType::f32)
    fail("mined pairs: expected neighbour indices (N, k) i64 and similarities (N, k) f32");
  if (nb.indices.size(0) != num_images_)
    fail("mined pairs: the neighbour list has ", nb.indices.size(0), " rows, '", images.name, "' has ", num_images_,
         " images");
  Tensor idx = copy_to(nb.indices, Device::cpu(), DType::i64);
  Tensor sim = copy_to(nb.similarities, Device::cpu(), DType::f32);
  const int64_t k = idx.size(1);
  const int64_t* ip = idx.data<int64_t>();
  const float* sp = sim.data<float>();
  group_start_.assign(1, 0);
  for (int64_t i = 0; i < num_images_; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      int64_t n = ip[i * k + j];
      if (n < 0 || n >= num_images_)
        fail("mined pairs: neighbour (", i, ", ", j, ") is image ", n, ", expected 0..", num_images_ - 1);
      if (n != i && sp[i * k + j] >= cfg_.mined_threshold) {
        group_items_.push_back(n);
        group_sim_.push_back(sp[i * k + j]);
      }
    }
    group_start_.push_back(static_cast<int64_t>(group_items_.size()));
  }
  rows_ = num_images_;
}

PairGenerator::PairGenerator(const PairConfig& cfg, const VideoSet& videos) : cfg_(cfg) {
  init(videos.frames);
  if (cfg_.kind != PairKind::temporal)
    fail("pair generator: a VideoSet is for temporal pairs, the pair kind is ", pair_kind_name(cfg_.kind));
  if (cfg_.min_gap < 0 || cfg_.min_gap > cfg_.max_gap)
    fail("temporal pairs: gap range [", cfg_.min_gap, ", ", cfg_.max_gap, "], expected 0 <= min_gap <= max_gap");
  const std::vector<int64_t>& s = videos.start;
  if (s.size() < 2 || s.front() != 0 || s.back() != num_images_ || !std::is_sorted(s.begin(), s.end()))
    fail("temporal pairs: the video starts do not cover the ", num_images_, " frames");
  group_start_ = s;
  group_items_.resize(num_images_);
  group_of_.resize(num_images_);
  int64_t longest = 0;
  for (size_t v = 0; v + 1 < s.size(); ++v) {
    longest = std::max(longest, s[v + 1] - s[v]);
    for (int64_t f = s[v]; f < s[v + 1]; ++f) {
      group_items_[f] = f;
      group_of_[f] = static_cast<int64_t>(v);
      int64_t t = f - s[v], len = s[v + 1] - s[v];
      if (t + cfg_.min_gap < len || t - cfg_.min_gap >= 0) anchors_.push_back(f);
    }
  }
  if (anchors_.empty())
    fail("temporal pairs: no frame has a partner ", cfg_.min_gap, "..", cfg_.max_gap,
         " frames away: the longest video has ", longest, " frames");
  if (static_cast<int64_t>(anchors_.size()) >= kMaxRows)
    fail("temporal pairs: ", anchors_.size(), " frames, more than the ", kMaxRows, " supported");
  rows_ = static_cast<int64_t>(anchors_.size());
}

// ---------------------------------------------------------------- planning

uint64_t PairGenerator::offset(int64_t epoch, int64_t row, int64_t slot) const {
  SIAM_CHECK(row < kMaxRows && slot < kMaxSlots, "row ", row, " slot ", slot, " past the counter layout");
  return (static_cast<uint64_t>(epoch) << 44) | (static_cast<uint64_t>(row) << 20) | (static_cast<uint64_t>(slot) << 4);
}

std::vector<int64_t> PairGenerator::epoch_order(int64_t epoch) const {
  if (epoch < 0 || epoch >= kMaxEpochs) fail("pair generator: epoch ", epoch, ", expected 0..", kMaxEpochs - 1);
  Generator g(mix(cfg_.seed), static_cast<uint64_t>(epoch) << 24);
  Tensor perm = randperm(rows_, g);
  const int64_t* p = perm.data<int64_t>();
  return std::vector<int64_t>(p, p + rows_);
}

std::array<int64_t, 2> PairGenerator::row_images(int64_t epoch, int64_t row, PairKind& kind) const {
  const uint64_t off = offset(epoch, row, 0);
  auto word = [&](uint64_t w) { return static_cast<uint64_t>(philox_word(cfg_.seed, off, w)); };
  kind = cfg_.kind;
  switch (cfg_.kind) {
    case PairKind::augmentation: {
      if (!from_list_) return {row, row};
      int64_t img = pairs_[row][word(0) & 1];
      return {img, img};
    }
    case PairKind::semantic: {
      if (!pairs_.empty()) {
        // Random order, so an asymmetric recipe (BYOL) does not always blur the same side.
        const auto& p = pairs_[row];
        return word(0) & 1 ? std::array<int64_t, 2>{p[1], p[0]} : p;
      }
      const int64_t g = group_of_[row], first = group_start_[g], n = group_start_[g + 1] - first;
      // Uniform over the class except the anchor: the anchor's own draw maps to the last member.
      int64_t pick = group_items_[first + static_cast<int64_t>(word(0) % static_cast<uint64_t>(n - 1))];
      if (pick == row) pick = group_items_[first + n - 1];
      return {row, pick};
    }
    case PairKind::mined: {
      const int64_t first = group_start_[row], n = group_start_[row + 1] - first;
      if (n > 0 && philox_uniform(cfg_.seed, off, 0) < cfg_.mined_ratio)
        return {row, group_items_[first + static_cast<int64_t>(word(1) % static_cast<uint64_t>(n))]};
      kind = PairKind::augmentation;
      return {row, row};
    }
    case PairKind::temporal: {
      const int64_t f = anchors_[row], v = group_of_[f];
      const int64_t t = f - group_start_[v], len = group_start_[v + 1] - group_start_[v];
      // Partners before the frame: [t - max, t - min]; after it: [t + min, t + max]
      // (t itself only once when min_gap is 0).
      const int64_t lo_a = std::max<int64_t>(0, t - cfg_.max_gap), hi_a = t - cfg_.min_gap;
      const int64_t lo_b = t + std::max<int64_t>(cfg_.min_gap, cfg_.min_gap == 0 ? 1 : 0);
      const int64_t hi_b = std::min(len - 1, t + cfg_.max_gap);
      const int64_t na = std::max<int64_t>(0, hi_a - lo_a + 1), nb = std::max<int64_t>(0, hi_b - lo_b + 1);
      SIAM_CHECK(na + nb > 0, "temporal anchor without partner");
      int64_t k = static_cast<int64_t>(word(0) % static_cast<uint64_t>(na + nb));
      int64_t s = k < na ? lo_a + k : lo_b + (k - na);
      return {f, group_start_[v] + s};
    }
  }
  SIAM_CHECK(false, "unknown pair kind");
}

PairGenerator::RowInfo PairGenerator::row_info(const BatchPlan& plan, int64_t b) const {
  SIAM_CHECK(b >= 0 && b < static_cast<int64_t>(plan.kinds.size()), "row ", b, " outside the plan");
  RowInfo r;
  r.kind = plan.kinds[b];
  const int64_t a = plan.views[0][b].image, n = plan.views[1][b].image;
  // Frames of a video are consecutive images (the VideoSet's layout).
  if (r.kind == PairKind::temporal) r.time_gap = std::abs(n - a);
  if (r.kind == PairKind::mined)
    for (int64_t k = group_start_[a]; k < group_start_[a + 1]; ++k)
      if (group_items_[k] == n) {
        r.similarity = group_sim_[k];
        break;
      }
  return r;
}

BatchPlan PairGenerator::plan(int64_t epoch, const int64_t* rows, int64_t count) const {
  if (epoch < 0 || epoch >= kMaxEpochs) fail("pair generator: epoch ", epoch, ", expected 0..", kMaxEpochs - 1);
  const int V = num_views();
  BatchPlan plan;
  plan.rows.assign(rows, rows + count);
  plan.kinds.resize(count);
  plan.views.assign(V, std::vector<ViewSpec>(count));
  const OverlapConstraint& o = cfg_.overlap;
  for (int64_t b = 0; b < count; ++b) {
    const int64_t row = rows[b];
    SIAM_CHECK(row >= 0 && row < rows_, "row ", row, " outside the epoch's ", rows_, " rows");
    std::array<int64_t, 2> img = row_images(epoch, row, plan.kinds[b]);
    auto draw = [&](int v, int64_t attempt) {
      ViewSpec s;
      s.image = img[v % 2];
      s.params = sample_augment(cfg_.views[v], static_cast<int>(src_h_), static_cast<int>(src_w_), cfg_.seed,
                                offset(epoch, row, 1 + attempt * V + v));
      return s;
    };
    for (int v = 0; v < V; ++v) plan.views[v][b] = draw(v, 0);
    if (o.kind == OverlapConstraint::Kind::any) continue;
    auto ok = [&](double iou) {
      return o.kind == OverlapConstraint::Kind::zero ? iou == 0.0 : (iou >= o.lo && iou <= o.hi);
    };
    int64_t attempt = 0;
    while (!ok(crop_iou(plan.views[0][b].params, plan.views[1][b].params))) {
      if (++attempt >= o.max_tries) {
        const AugmentConfig& c = cfg_.views[0];
        fail("overlap constraint IoU ", o.kind == OverlapConstraint::Kind::zero ? std::string("= 0")
                                                                                 : detail::cat("in [", o.lo, ", ", o.hi, "]"),
             " not met in ", o.max_tries, " tries with crop scale [", c.scale_min, ", ", c.scale_max, "] on ", src_h_,
             " x ", src_w_, " images (epoch ", epoch, ", row ", row, "): widen the scale range or the IoU interval");
      }
      plan.views[0][b] = draw(0, attempt);
      plan.views[1][b] = draw(1, attempt);
    }
  }
  return plan;
}

BatchPlan PairGenerator::plan_batch(int64_t epoch, int64_t index, int64_t batch_size) const {
  if (batch_size <= 0) fail("pair generator: batch size ", batch_size, ", expected > 0");
  const int64_t first = index * batch_size;
  if (index < 0 || first >= rows_)
    fail("pair generator: batch ", index, " of size ", batch_size, " is past the epoch's ", rows_, " rows");
  std::vector<int64_t> order = epoch_order(epoch);
  return plan(epoch, order.data() + first, std::min(batch_size, rows_ - first));
}

}  // namespace siam::data
