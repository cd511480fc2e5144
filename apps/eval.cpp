#include "apps/eval.h"

#include "apps/run_config.h"
#include "dist/dist.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "data/augment.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tensor/rng.h"

namespace siam::apps {

namespace {

// Counter offsets that keep the draws of one seed apart: initial weights, augmentation.
constexpr uint64_t kInitOffset = uint64_t{1} << 40;
constexpr uint64_t kAugmentOffset = uint64_t{1} << 44;
constexpr uint64_t kBlocksPerView = 16;  // kAugmentWords (35) words fit in 9 counter blocks

Device device_of(const nn::Module& m) {
  std::vector<Tensor> ps = m.parameters();
  return ps.empty() ? Device::cpu() : ps.front().device();
}

void check_features(const char* what, const Tensor& x) {
  if (x.dim() != 2 || !is_floating(x.dtype()))
    fail(what, ": expected a floating (N, D) tensor, got ", shape_str(x.shape()), " ", dtype_name(x.dtype()));
}

// n < 0: any length.
void check_labels(const char* what, const Tensor& y, int64_t n, int num_classes) {
  if (y.dim() != 1 || y.dtype() != DType::i64 || (n >= 0 && y.size(0) != n))
    fail(what, ": expected (", n >= 0 ? std::to_string(n) : "N", ") i64 labels, got ", shape_str(y.shape()), " ",
         dtype_name(y.dtype()));
  Tensor h = copy_to(y, Device::cpu(), DType::i64);
  const int64_t* p = h.data<int64_t>();
  for (int64_t i = 0; i < y.size(0); ++i)
    if (p[i] < 0 || p[i] >= num_classes)
      fail(what, ": label ", p[i], " at row ", i, ", expected 0 .. ", num_classes - 1,
           p[i] < 0 ? " (an unlabelled set cannot be evaluated)" : "");
}

// Row-wise argmax of (N, K) logits; ties go to the lowest class.
Tensor argmax_rows(const Tensor& logits) { return max(logits, 1).second; }

// Normal(0, std) weights of shape (rows, cols) from Generator(seed, kInitOffset), in dtype dt.
Tensor init_normal(int64_t rows, int64_t cols, double std, uint64_t seed, DType dt) {
  Generator g(seed, kInitOffset);
  return mul(randn({rows, cols}, g, {dt}), std);
}

}  // namespace

Tensor to_input(const Tensor& images, const Normalisation& norm, int out_h, int out_w) {
  if (images.dim() != 4 || images.dtype() != DType::u8 || !images.device().is_cpu() ||
      (images.size(3) != 1 && images.size(3) != 3))
    fail("to_input: expected (B, H, W, C) u8 images on the CPU with C = 1 or 3, got ", shape_str(images.shape()),
         " ", dtype_name(images.dtype()));
  Tensor src = contiguous(images);
  const int64_t B = src.size(0);
  const int H = static_cast<int>(src.size(1)), W = static_cast<int>(src.size(2)), C = static_cast<int>(src.size(3));
  const int oh = out_h > 0 ? out_h : H, ow = out_w > 0 ? out_w : W;
  data::AugmentParams p = data::identity_params(H, W, oh, ow);
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = norm.mean[c];
    p.std[c] = norm.std[c];
  }
  Tensor out = empty({B, C, oh, ow});
  const uint8_t* in = src.data<uint8_t>();
  float* o = out.data<float>();
  const int64_t in_stride = int64_t{H} * W * C, out_stride = int64_t{C} * oh * ow;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) data::augment_cpu(in + b * in_stride, C, p, o + b * out_stride);
  return out;
}

Tensor extract_features(nn::Module& backbone, const data::ImageSet& set, const Normalisation& norm,
                        int64_t batch_size, int input_size) {
  if (batch_size <= 0) fail("extract_features: batch size ", batch_size, ", expected > 0");
  if (set.size() == 0) fail("extract_features: '", set.name, "' has no images");
  EvalModeGuard mode(backbone);
  NoGradGuard no_grad;
  const Device dev = device_of(backbone);
  const std::vector<Tensor> params = backbone.parameters();
  const DType dtype = params.empty() ? DType::f32 : params.front().dtype();
  std::vector<Tensor> parts;
  for (int64_t start = 0; start < set.size(); start += batch_size) {
    const int64_t count = std::min(batch_size, set.size() - start);
    Tensor x = to_input(narrow(set.images, 0, start, count), norm, input_size, input_size);
    x = siam::to(x, dev);
    if (x.dtype() != dtype) x = siam::to(x, dtype);  // an f64 model (run.dtype = "f64") gets f64 images
    Tensor f = backbone.forward(x);  // (count, D)
    if (f.dim() != 2 || f.size(0) != count)
      fail("extract_features: the backbone returned ", shape_str(f.shape()), " for ", count,
           " images, expected (", count, ", D)");
    parts.push_back(copy_to(f, Device::cpu(), DType::f32));
  }
  return parts.size() == 1 ? parts.front() : cat(parts, 0);
}

Tensor extract_features(nn::Module& backbone, const data::ImageSet& set, const Normalisation& norm,
                        int64_t batch_size, int input_size, dist::Group& group) {
  const int64_t n = set.size(), w = group.size();
  if (w == 1) return extract_features(backbone, set, norm, batch_size, input_size);
  const int64_t per = (n + w - 1) / w, lo = std::min(n, per * group.rank()), hi = std::min(n, lo + per);
  std::vector<int64_t> idx;
  for (int64_t i = lo; i < hi; ++i) idx.push_back(i);
  // A rank whose slice is empty still learns the feature size from one image.
  const Tensor mine = extract_features(backbone, subset(set, idx.empty() ? std::vector<int64_t>{0} : idx), norm,
                                       batch_size, input_size);
  NoGradGuard no_grad;
  Tensor padded = zeros({per, mine.size(1)});
  if (hi > lo) copy_(narrow(padded, 0, 0, hi - lo), mine);
  return contiguous(narrow(group.all_gather(padded), 0, 0, n));
}

Tensor pixel_features(const data::ImageSet& set, const Normalisation& norm) {
  return flatten(to_input(set.images, norm), 1);
}

double top1_accuracy(const Tensor& predictions, const Tensor& labels) {
  if (predictions.shape() != labels.shape() || predictions.dim() != 1)
    fail("top1_accuracy: predictions ", shape_str(predictions.shape()), " and labels ", shape_str(labels.shape()),
         ", expected two (N) tensors");
  if (predictions.numel() == 0) fail("top1_accuracy: no predictions");
  std::vector<double> p = predictions.to_vector(), y = labels.to_vector();
  int64_t hits = 0;
  for (size_t i = 0; i < p.size(); ++i) hits += p[i] == y[i];
  return 100.0 * static_cast<double>(hits) / static_cast<double>(p.size());
}

double percentile_sorted(const std::vector<double>& sorted, double q) {
  SIAM_CHECK(!sorted.empty() && q >= 0 && q <= 100, "percentile_sorted: ", sorted.size(), " values, q = ", q);
  const double rank = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank)), hi = static_cast<size_t>(std::ceil(rank));
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

Summary summarize(std::vector<double> v) {
  if (v.empty()) fail("summarize: no values");
  std::sort(v.begin(), v.end());
  Summary s;
  s.count = static_cast<int64_t>(v.size());
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(v.size()));
  s.min = v.front();
  s.max = v.back();
  s.q1 = percentile_sorted(v, 25);
  s.median = percentile_sorted(v, 50);
  s.q3 = percentile_sorted(v, 75);
  return s;
}

// ---------------------------------------------------------------- kNN

namespace {

// Votes of the block's rows. sim: (b, N) contiguous similarities; out[j][row] for k = ks[j].
template <class T>
void knn_vote(const Tensor& sim, const int64_t* labels, int num_classes, const std::vector<int64_t>& ks,
              double temperature, std::vector<int64_t*>& out) {
  const int64_t b = sim.size(0), n = sim.size(1);
  const int64_t kmax = *std::max_element(ks.begin(), ks.end());
  const T* s = sim.data<T>();
#pragma omp parallel
  {
    std::vector<int64_t> idx(n);
    std::vector<double> votes(num_classes);
#pragma omp for schedule(dynamic, 8)
    for (int64_t r = 0; r < b; ++r) {
      const T* row = s + r * n;
      std::iota(idx.begin(), idx.end(), 0);
      // A strict total order (similarity, then index), so the neighbours never depend on the
      // selection algorithm.
      auto closer = [row](int64_t a, int64_t c) { return row[a] > row[c] || (row[a] == row[c] && a < c); };
      std::nth_element(idx.begin(), idx.begin() + (kmax - 1), idx.end(), closer);
      std::sort(idx.begin(), idx.begin() + kmax, closer);
      // exp((s - s_max) / T): the same votes up to the common factor exp(-s_max / T), which
      // cannot overflow however small T is.
      const double top = static_cast<double>(row[idx[0]]);
      for (size_t j = 0; j < ks.size(); ++j) {
        std::fill(votes.begin(), votes.end(), 0.0);
        for (int64_t t = 0; t < ks[j]; ++t)
          votes[labels[idx[t]]] += std::exp((static_cast<double>(row[idx[t]]) - top) / temperature);
        out[j][r] = std::max_element(votes.begin(), votes.end()) - votes.begin();
      }
    }
  }
}

}  // namespace

std::vector<Tensor> knn_predict(const Tensor& train_features, const Tensor& train_labels,
                                const Tensor& test_features, int num_classes, const KnnOptions& options) {
  check_features("kNN: training features", train_features);
  check_features("kNN: test features", test_features);
  const int64_t n = train_features.size(0), m = test_features.size(0);
  if (test_features.size(1) != train_features.size(1))
    fail("kNN: test features have ", test_features.size(1), " dimensions, the training features ",
         train_features.size(1));
  if (num_classes < 1) fail("kNN: ", num_classes, " classes, expected >= 1");
  check_labels("kNN: training labels", train_labels, n, num_classes);
  if (options.k.empty()) fail("kNN: no k given");
  for (int64_t k : options.k)
    if (k < 1 || k > n) fail("kNN: k = ", k, ", expected 1 .. ", n, " (the number of training images)");
  if (!(options.temperature > 0)) fail("kNN: temperature ", options.temperature, ", expected > 0");
  if (options.batch_size <= 0) fail("kNN: batch size ", options.batch_size, ", expected > 0");

  NoGradGuard no_grad;
  const DType dt = train_features.dtype();
  const Device dev = train_features.device();
  Tensor train_t = transpose(normalize(train_features, 1), 0, 1);  // (D, N)
  Tensor test = normalize(siam::to(siam::to(test_features, dt), dev), 1);
  Tensor labels = copy_to(train_labels, Device::cpu(), DType::i64);

  std::vector<Tensor> preds;
  for (size_t j = 0; j < options.k.size(); ++j) preds.push_back(empty({m}, {DType::i64}));
  for (int64_t start = 0; start < m; start += options.batch_size) {
    const int64_t count = std::min(options.batch_size, m - start);
    Tensor sim = copy_to(matmul(narrow(test, 0, start, count), train_t), Device::cpu(),
                         dt == DType::f64 ? DType::f64 : DType::f32);  // (count, N)
    std::vector<int64_t*> out;
    for (auto& p : preds) out.push_back(p.data<int64_t>() + start);
    if (dt == DType::f64)
      knn_vote<double>(sim, labels.data<int64_t>(), num_classes, options.k, options.temperature, out);
    else
      knn_vote<float>(sim, labels.data<int64_t>(), num_classes, options.k, options.temperature, out);
  }
  return preds;
}

std::vector<KnnResult> knn_eval(const Tensor& train_features, const Tensor& train_labels,
                                const Tensor& test_features, const Tensor& test_labels, int num_classes,
                                const KnnOptions& options) {
  check_labels("kNN: test labels", test_labels, test_features.size(0), num_classes);
  std::vector<Tensor> preds = knn_predict(train_features, train_labels, test_features, num_classes, options);
  std::vector<KnnResult> r;
  for (size_t j = 0; j < preds.size(); ++j) r.push_back({options.k[j], top1_accuracy(preds[j], test_labels)});
  return r;
}

// ---------------------------------------------------------------- linear probe

LinearProbeResult linear_probe(const Tensor& train_x, const Tensor& train_y, const Tensor& test_x,
                               const Tensor& test_y, int num_classes, const LinearProbeOptions& o) {
  check_features("linear probe: training features", train_x);
  check_features("linear probe: test features", test_x);
  const int64_t n = train_x.size(0), d = train_x.size(1);
  if (test_x.size(1) != d)
    fail("linear probe: test features have ", test_x.size(1), " dimensions, the training features ", d);
  if (num_classes < 2) fail("linear probe: ", num_classes, " classes, expected >= 2");
  check_labels("linear probe: training labels", train_y, n, num_classes);
  check_labels("linear probe: test labels", test_y, test_x.size(0), num_classes);
  if (o.epochs < 1) fail("linear probe: epochs ", o.epochs, ", expected >= 1");
  if (o.batch_size < 1) fail("linear probe: batch size ", o.batch_size, ", expected >= 1");
  if (!(o.lr > 0)) fail("linear probe: learning rate ", o.lr, ", expected > 0");

  const DType dt = train_x.dtype();
  const Device dev = train_x.device();
  Tensor x = contiguous(train_x), xt = siam::to(siam::to(test_x, dt), dev);
  Tensor y = siam::to(train_y, dev), yt = siam::to(test_y, dev);
  if (o.standardise) {
    NoGradGuard no_grad;
    Tensor mu = mean(x, {0}, true);                          // (1, D)
    Tensor sd = sqrt(var(x, {0}, false, true));              // (1, D)
    sd = where(eq(sd, zeros({1}, {dt, dev})), ones({1}, {dt, dev}), sd);
    x = contiguous(div(sub(x, mu), sd));
    xt = div(sub(xt, mu), sd);
  }

  Tensor w, b;
  if (o.init_weight.defined()) {
    if (o.init_weight.shape() != Shape{num_classes, d} || !o.init_bias.defined() ||
        o.init_bias.shape() != Shape{num_classes})
      fail("linear probe: initial weight ", shape_str(o.init_weight.shape()), " and bias ",
           o.init_bias.defined() ? shape_str(o.init_bias.shape()) : "none", ", expected [", num_classes, ", ", d,
           "] and [", num_classes, "]");
    w = copy_to(o.init_weight, dev, dt);
    b = copy_to(o.init_bias, dev, dt);
  } else {
    w = copy_to(init_normal(num_classes, d, 0.01, o.seed, dt), dev, dt);
    b = zeros({num_classes}, {dt, dev});
  }
  w.requires_grad_(true);
  b.requires_grad_(true);

  nn::SGD opt({nn::ParamGroup{.name = "linear_probe", .params = {{"weight", w}, {"bias", b}}, .lr = o.lr,
                              .weight_decay = o.weight_decay}},
              nn::SgdOptions{.momentum = o.momentum});
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  nn::CosineSchedule lr(o.lr, 0.0, o.epochs * steps_per_epoch);
  Generator shuffle(o.seed);
  LinearProbeResult r;
  int64_t step = 0;
  for (int64_t e = 0; e < o.epochs; ++e) {
    Tensor order = siam::to(randperm(n, shuffle), dev);
    double total = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++step) {
      Tensor idx = narrow(order, 0, s * o.batch_size, std::min(o.batch_size, n - s * o.batch_size));
      opt.set_lr(lr(step));
      opt.zero_grad();
      Tensor loss = cross_entropy(linear(index_select(x, 0, idx), w, b), index_select(y, 0, idx));
      autograd::backward(loss);
      opt.step();
      total += loss.item();
    }
    r.epoch_loss.push_back(total / static_cast<double>(steps_per_epoch));
  }
  NoGradGuard no_grad;
  r.train_top1 = top1_accuracy(argmax_rows(linear(x, w, b)), y);
  r.test_top1 = top1_accuracy(argmax_rows(linear(xt, w, b)), yt);
  r.weight = detach(w);
  r.bias = detach(b);
  return r;
}

// ---------------------------------------------------------------- semi-supervised fine-tuning

std::vector<int64_t> balanced_subset(const Tensor& labels, int num_classes, double fraction, uint64_t seed) {
  if (!(fraction > 0 && fraction <= 1)) fail("balanced subset: fraction ", fraction, ", expected in (0, 1]");
  check_labels("balanced subset: labels", labels, -1, num_classes);
  std::vector<std::vector<int64_t>> members(num_classes);
  const std::vector<double> y = labels.to_vector();
  for (size_t i = 0; i < y.size(); ++i) members[static_cast<size_t>(y[i])].push_back(static_cast<int64_t>(i));
  Generator g(seed);
  std::vector<int64_t> picked;
  for (const auto& m : members) {
    if (m.empty()) continue;
    const int64_t n = static_cast<int64_t>(m.size());
    const int64_t take = std::max<int64_t>(1, std::llround(fraction * static_cast<double>(n)));
    const std::vector<double> perm = randperm(n, g).to_vector();
    for (int64_t t = 0; t < take; ++t) picked.push_back(m[static_cast<size_t>(perm[t])]);
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

FinetuneResult finetune(nn::Module& backbone, int64_t feature_dim, const data::ImageSet& train,
                        const data::ImageSet& test, const Normalisation& norm, const FinetuneOptions& o) {
  const int K = train.num_classes;
  if (K < 2) fail("fine-tuning: '", train.name, "' has ", K, " classes, expected >= 2");
  if (test.num_classes != K)
    fail("fine-tuning: the test set '", test.name, "' has ", test.num_classes, " classes, the training set ", K);
  check_labels("fine-tuning: test labels", test.labels, test.size(), K);
  if (o.epochs < 1) fail("fine-tuning: epochs ", o.epochs, ", expected >= 1");
  if (o.batch_size < 2) fail("fine-tuning: batch size ", o.batch_size, ", expected >= 2 (batch norm)");
  if (!(o.lr > 0)) fail("fine-tuning: learning rate ", o.lr, ", expected > 0");
  const std::vector<int64_t> subset = balanced_subset(train.labels, K, o.fraction, o.seed);
  const int64_t n = static_cast<int64_t>(subset.size());

  const Device dev = device_of(backbone);
  const int H = static_cast<int>(train.height()), W = static_cast<int>(train.width());
  const int C = static_cast<int>(train.channels());
  const int side_h = o.input_size > 0 ? o.input_size : H, side_w = o.input_size > 0 ? o.input_size : W;
  data::AugmentConfig aug;
  aug.out_h = side_h;
  aug.out_w = side_w;
  aug.scale_min = o.crop_scale_min;
  aug.flip_p = o.flip_p;
  aug.jitter_p = aug.grayscale_p = aug.blur_p = aug.solarize_p = 0.0f;
  aug.mean = norm.mean;
  aug.std = norm.std;
  data::validate(aug);

  Tensor w = copy_to(init_normal(K, feature_dim, 0.01, o.seed, DType::f32), dev, DType::f32).requires_grad_(true);
  Tensor b = zeros({K}, {DType::f32, dev}).requires_grad_(true);
  nn::NamedTensors params = backbone.named_parameters();
  params.emplace_back("head.weight", w);
  params.emplace_back("head.bias", b);
  nn::SGD opt({nn::ParamGroup{.name = "finetune", .params = params, .lr = o.lr, .weight_decay = o.weight_decay}},
              nn::SgdOptions{.momentum = o.momentum});
  // The last partial batch is dropped (batch norm needs rows to normalise over), unless the
  // subset is smaller than one batch.
  const int64_t bs = std::min(o.batch_size, n);
  const int64_t steps_per_epoch = n / bs;
  nn::CosineSchedule lr(o.lr, 0.0, o.epochs * steps_per_epoch);
  Generator shuffle(o.seed);
  const uint8_t* pixels = train.images.data<uint8_t>();
  const int64_t image_bytes = int64_t{H} * W * C, view_floats = int64_t{C} * side_h * side_w;
  const std::vector<double> labels = train.labels.to_vector();

  FinetuneResult r;
  r.labelled = n;
  EvalModeGuard mode(backbone);
  int64_t step = 0;
  for (int64_t e = 0; e < o.epochs; ++e) {
    backbone.train();
    const std::vector<double> order = randperm(n, shuffle).to_vector();
    double total = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++step) {
      Tensor x = empty({bs, C, side_h, side_w});
      std::vector<double> yb(bs);
      float* xp = x.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < bs; ++t) {
        const int64_t pos = s * bs + t, image = subset[static_cast<size_t>(order[pos])];
        data::AugmentParams p = data::identity_params(H, W, side_h, side_w);
        if (o.augment)
          p = data::sample_augment(aug, H, W, o.seed, kAugmentOffset + static_cast<uint64_t>(e * n + pos) * kBlocksPerView);
        for (int c = 0; c < 3; ++c) {
          p.mean[c] = norm.mean[c];
          p.std[c] = norm.std[c];
        }
        data::augment_cpu(pixels + image * image_bytes, C, p, xp + t * view_floats);
        yb[t] = labels[image];
      }
      opt.set_lr(lr(step));
      opt.zero_grad();
      Tensor logits = linear(backbone.forward(siam::to(x, dev)), w, b);
      Tensor loss = cross_entropy(logits, from_vector(yb, {bs}, {DType::i64, dev}));
      autograd::backward(loss);
      opt.step();
      total += loss.item();
    }
    r.epoch_loss.push_back(total / static_cast<double>(steps_per_epoch));
  }

  backbone.eval();
  NoGradGuard no_grad;
  std::vector<Tensor> preds;
  for (int64_t start = 0; start < test.size(); start += 256) {
    const int64_t count = std::min<int64_t>(256, test.size() - start);
    Tensor x = to_input(narrow(test.images, 0, start, count), norm, o.input_size, o.input_size);
    preds.push_back(copy_to(argmax_rows(linear(backbone.forward(siam::to(x, dev)), w, b)), Device::cpu(), DType::i64));
  }
  r.test_top1 = top1_accuracy(cat(preds, 0), test.labels);
  return r;
}

}  // namespace siam::apps
