#include "apps/invariance.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numbers>

#include "apps/eval.h"
#include "autograd/ops.h"
#include "tensor/rng.h"

namespace siam::apps {

namespace fs = std::filesystem;

double firing_percentile(int num_classes) {
  if (num_classes < 2) fail("invariance: ", num_classes, " classes, expected >= 2");
  return std::min((1.0 - 1.0 / num_classes) * 100.0, 95.0);
}

InvarianceScore invariance_score(const Tensor& activations, const std::vector<int64_t>& set_start,
                                 const std::vector<int>& set_class, int num_classes, const std::vector<int64_t>& k) {
  if (activations.dim() != 2 || !is_floating(activations.dtype()) || activations.size(0) == 0)
    fail("invariance: expected floating (N, D) activations with N > 0, got ", shape_str(activations.shape()), " ",
         dtype_name(activations.dtype()));
  const int64_t N = activations.size(0), D = activations.size(1);
  const int64_t S = static_cast<int64_t>(set_class.size());
  if (static_cast<int64_t>(set_start.size()) != S + 1 || set_start.front() != 0 || set_start.back() != N)
    fail("invariance: set_start has ", set_start.size(), " entries from ", set_start.empty() ? -1 : set_start.front(),
         " to ", set_start.empty() ? -1 : set_start.back(), ", expected ", S + 1, " from 0 to ", N,
         " (one per set plus the end)");
  for (int64_t s = 0; s < S; ++s) {
    if (set_start[s + 1] < set_start[s])
      fail("invariance: set ", s, " starts at ", set_start[s], " and ends at ", set_start[s + 1]);
    if (set_class[s] < 0 || set_class[s] >= num_classes)
      fail("invariance: set ", s, " has class ", set_class[s], ", expected 0 .. ", num_classes - 1);
  }
  if (k.empty()) fail("invariance: no K given");
  for (int64_t kk : k)
    if (kk < 1) fail("invariance: K = ", kk, ", expected >= 1");

  InvarianceScore r;
  r.k = k;
  r.percentile = firing_percentile(num_classes);
  for (int64_t s = 0; s < S; ++s) r.sets_used += set_start[s + 1] - set_start[s] >= 3;
  if (r.sets_used == 0) fail("invariance: none of the ", S, " sets has 3 or more images");

  Tensor cols = contiguous(transpose(copy_to(activations, Device::cpu(), DType::f64), 0, 1));  // (D, N)
  const double* a = cols.data<double>();
  // ratio[c * D + i] = L_c(i) / G(i), NaN where neuron i takes no part in class c.
  std::vector<double> ratio(static_cast<size_t>(num_classes) * D, std::nan(""));
#pragma omp parallel
  {
    std::vector<double> sorted(N), local_sum(num_classes);
    std::vector<int64_t> local_sets(num_classes);
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < D; ++i) {
      const double* v = a + i * N;
      std::copy(v, v + N, sorted.begin());
      std::sort(sorted.begin(), sorted.end());
      const double t = percentile_sorted(sorted, r.percentile);
      const int64_t global = N - (std::upper_bound(sorted.begin(), sorted.end(), t) - sorted.begin());
      if (global == 0) continue;
      const double G = static_cast<double>(global) / static_cast<double>(N);
      std::fill(local_sum.begin(), local_sum.end(), 0.0);
      std::fill(local_sets.begin(), local_sets.end(), 0);
      for (int64_t s = 0; s < S; ++s) {
        const int64_t size = set_start[s + 1] - set_start[s];
        if (size < 3) continue;
        int64_t fired = 0;
        for (int64_t n = set_start[s]; n < set_start[s + 1]; ++n) fired += v[n] > t;
        if (fired == 0) continue;
        local_sum[set_class[s]] += static_cast<double>(fired) / static_cast<double>(size);
        ++local_sets[set_class[s]];
      }
      for (int c = 0; c < num_classes; ++c)
        if (local_sets[c] > 0) ratio[c * D + i] = local_sum[c] / static_cast<double>(local_sets[c]) / G;
    }
  }

  r.score.assign(k.size(), 0.0);
  std::vector<double> vals;
  for (int c = 0; c < num_classes; ++c) {
    vals.clear();
    for (int64_t i = 0; i < D; ++i)
      if (!std::isnan(ratio[c * D + i])) vals.push_back(ratio[c * D + i]);
    if (vals.empty()) continue;
    std::sort(vals.begin(), vals.end(), std::greater<>());
    ++r.classes_scored;
    for (size_t j = 0; j < k.size(); ++j) {
      const size_t top = std::min(vals.size(), static_cast<size_t>(k[j]));
      double sum = 0;
      for (size_t q = 0; q < top; ++q) sum += vals[q];
      r.score[j] += sum / static_cast<double>(top);
    }
  }
  if (r.classes_scored == 0) fail("invariance: no neuron fires above its threshold in any set of 3 or more images");
  for (double& s : r.score) s *= (100.0 - r.percentile) / static_cast<double>(r.classes_scored);
  return r;
}

// ---------------------------------------------------------------- set builders

const char* transformation_name(Transformation t) {
  switch (t) {
    case Transformation::occlusion: return "occlusion";
    case Transformation::viewpoint: return "viewpoint";
    case Transformation::illumination: return "illumination";
    case Transformation::instance: return "instance";
  }
  return "?";
}

Transformation parse_transformation(const std::string& name) {
  for (Transformation t : {Transformation::occlusion, Transformation::viewpoint, Transformation::illumination,
                           Transformation::instance})
    if (name == transformation_name(t)) return t;
  fail("invariance: unknown set kind '", name, "', expected occlusion, viewpoint, illumination or instance");
}

namespace {

using Image = std::vector<uint8_t>;  // (H, W, C)

uint8_t clamp_u8(double v) { return static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L)); }

// A grey rectangle with the image's proportions covering `share` of it, at a position drawn
// from words (0, 1) of (seed, offset).
Image occlude(const Image& src, int H, int W, int C, double share, uint64_t seed, uint64_t offset) {
  Image out = src;
  const int h = static_cast<int>(std::lround(std::sqrt(share) * H)), w = static_cast<int>(std::lround(std::sqrt(share) * W));
  if (h == 0 || w == 0) return out;
  const int top = static_cast<int>(philox_word(seed, offset, 0) % static_cast<uint32_t>(H - h + 1));
  const int left = static_cast<int>(philox_word(seed, offset, 1) % static_cast<uint32_t>(W - w + 1));
  for (int y = top; y < top + h; ++y)
    for (int x = left; x < left + w; ++x)
      for (int c = 0; c < C; ++c) out[(static_cast<size_t>(y) * W + x) * C + c] = 128;
  return out;
}

// Rotation by `angle` and horizontal scale `sx` about the centre; output pixel -> source by
// the inverse map, bilinear, 0 outside.
Image warp(const Image& src, int H, int W, int C, double angle, double sx) {
  Image out(src.size(), 0);
  const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0, ca = std::cos(angle), sa = std::sin(angle);
  auto at = [&](int y, int x, int c) -> double {
    return (y < 0 || y >= H || x < 0 || x >= W) ? 0.0 : src[(static_cast<size_t>(y) * W + x) * C + c];
  };
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const double dx = x - cx, dy = y - cy;
      const double u = (ca * dx + sa * dy) / sx + cx, v = -sa * dx + ca * dy + cy;
      const int x0 = static_cast<int>(std::floor(u)), y0 = static_cast<int>(std::floor(v));
      const double fx = u - x0, fy = v - y0;
      for (int c = 0; c < C; ++c) {
        const double val = (1 - fy) * ((1 - fx) * at(y0, x0, c) + fx * at(y0, x0 + 1, c)) +
                           fy * ((1 - fx) * at(y0 + 1, x0, c) + fx * at(y0 + 1, x0 + 1, c));
        out[(static_cast<size_t>(y) * W + x) * C + c] = clamp_u8(val);
      }
    }
  return out;
}

Image illuminate(const Image& src, int C, double brightness, double cast_phase) {
  Image out(src.size());
  double gain[3];
  for (int c = 0; c < 3; ++c)
    gain[c] = C == 3 ? brightness * (1 + 0.15 * std::cos(cast_phase + 2 * std::numbers::pi * c / 3)) : brightness;
  for (size_t k = 0; k < src.size(); ++k) out[k] = clamp_u8(src[k] * gain[k % C]);
  return out;
}

}  // namespace

InvarianceSets make_invariance_sets(const data::ImageSet& source, Transformation t, int64_t sets_per_class,
                                    int levels, uint64_t seed) {
  const int K = source.num_classes;
  if (K < 2) fail("invariance sets: '", source.name, "' has ", K, " classes, expected >= 2 labelled classes");
  if (sets_per_class < 1) fail("invariance sets: ", sets_per_class, " sets per class, expected >= 1");
  if (levels < 3) fail("invariance sets: ", levels, " levels, expected >= 3 (smaller sets are skipped)");
  const int H = static_cast<int>(source.height()), W = static_cast<int>(source.width());
  const int C = static_cast<int>(source.channels());
  const size_t bytes = static_cast<size_t>(H) * W * C;
  const uint8_t* pixels = source.images.data<uint8_t>();
  const std::vector<double> labels = source.labels.to_vector();
  std::vector<std::vector<int64_t>> members(K);
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] >= 0 && labels[i] < K) members[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));

  InvarianceSets out;
  out.name = transformation_name(t);
  out.num_classes = K;
  out.set_start.push_back(0);
  std::vector<Image> images;
  std::vector<int64_t> image_class;
  Generator pick(seed);
  for (int c = 0; c < K; ++c) {
    const int64_t n = static_cast<int64_t>(members[c].size());
    if (n == 0) continue;
    const std::vector<double> perm = randperm(n, pick).to_vector();
    auto image = [&](int64_t q) {
      const uint8_t* p = pixels + members[c][static_cast<size_t>(perm[q])] * bytes;
      return Image(p, p + bytes);
    };
    const int64_t sets = t == Transformation::instance ? std::min(sets_per_class, n / levels) : std::min(sets_per_class, n);
    for (int64_t s = 0; s < sets; ++s) {
      const uint64_t set_id = static_cast<uint64_t>(out.num_sets());
      for (int l = 0; l < levels; ++l) {
        const double f = static_cast<double>(l) / (levels - 1);  // 0 .. 1 across the levels
        switch (t) {
          case Transformation::occlusion:
            images.push_back(occlude(image(s), H, W, C, 0.6 * f, seed, (set_id * levels + l) * 4));
            break;
          case Transformation::viewpoint:
            images.push_back(warp(image(s), H, W, C, (-45 + 90 * f) * std::numbers::pi / 180,
                                  std::cos((-60 + 120 * f) * std::numbers::pi / 180)));
            break;
          case Transformation::illumination:
            images.push_back(illuminate(image(s), C, 0.4 + 1.2 * f, 2 * std::numbers::pi * l / levels));
            break;
          case Transformation::instance:
            images.push_back(image(s * levels + l));
            break;
        }
        image_class.push_back(c);
      }
      out.set_class.push_back(c);
      out.set_start.push_back(static_cast<int64_t>(images.size()));
    }
  }
  if (images.empty()) fail("invariance sets: '", source.name, "' gave no ", out.name, " set");
  const int64_t N = static_cast<int64_t>(images.size());
  out.images.images = empty({N, H, W, C}, {DType::u8});
  out.images.labels = empty({N}, {DType::i64});
  uint8_t* dst = out.images.images.data<uint8_t>();
  for (int64_t i = 0; i < N; ++i) {
    std::copy(images[i].begin(), images[i].end(), dst + i * bytes);
    out.images.labels.data<int64_t>()[i] = image_class[i];
  }
  out.images.num_classes = K;
  out.images.class_names = source.class_names;
  out.images.name = source.name + "/" + out.name;
  return out;
}

InvarianceSets load_invariance_folder(const std::string& dir, const data::DecodeOptions& opt) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("invariance folder: not found: ", dir);
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec) && e.path().filename().string()[0] != '.') classes.push_back(e.path().filename().string());
  if (ec) fail("invariance folder: cannot list ", dir, ": ", ec.message());
  if (classes.size() < 2)
    fail(dir, ": ", classes.size(), " class folders, expected >= 2 laid out as ", dir, "/<class>/<set>/<image>");
  std::sort(classes.begin(), classes.end());

  InvarianceSets out;
  out.name = fs::path(dir).filename().string();
  out.num_classes = static_cast<int>(classes.size());
  out.set_start.push_back(0);
  std::vector<Tensor> parts, part_labels;
  for (size_t c = 0; c < classes.size(); ++c) {
    const std::string path = dir + "/" + classes[c];
    data::ImageSet s = data::load_image_folder(path, opt);
    if (!parts.empty() && (s.height() != parts[0].size(1) || s.width() != parts[0].size(2)))
      fail(path, ": images are ", s.height(), " x ", s.width(), ", the first class's are ", parts[0].size(1), " x ",
           parts[0].size(2), "; give a size to resize them all on load");
    // load_image_folder lists each set's images together, sets in order, so the labels (the
    // set numbers) only ever grow.
    const std::vector<double> set_of = s.labels.to_vector();
    const int64_t base = out.set_start.back();
    for (size_t q = 0; q < s.class_names.size(); ++q) {
      out.set_class.push_back(static_cast<int>(c));
      out.set_start.push_back(base + (std::upper_bound(set_of.begin(), set_of.end(), static_cast<double>(q)) - set_of.begin()));
    }
    parts.push_back(s.images);
    part_labels.push_back(full({s.size()}, static_cast<double>(c), {DType::i64}));
    out.images.class_names.push_back(classes[c]);
  }
  out.images.images = cat(parts, 0);
  out.images.labels = cat(part_labels, 0);
  out.images.num_classes = out.num_classes;
  out.images.name = out.name;
  return out;
}

}  // namespace siam::apps
