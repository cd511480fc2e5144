#pragma once
// Evaluation protocols of a pretrained backbone (methods.md, "Evaluation protocols"): kNN on
// L2-normalised features, a linear probe on frozen features, and semi-supervised fine-tuning
// of the whole network on a class-balanced share of the labels. The baselines (raw pixels, a
// randomly initialised backbone) are the same functions applied to other features.
#include <array>
#include <cstdint>
#include <vector>

#include "data/datasets.h"
#include "nn/module.h"

namespace siam::dist {
class Group;
}

namespace siam::apps {

// Per-channel normalisation of [0, 1] pixels; a 1-channel image uses element 0.
struct Normalisation {
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};
};

// Puts a module in eval mode for its scope and restores the mode it found on exit (also when
// an error unwinds), so an evaluation in the middle of training leaves training as it was.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(nn::Module& m) : m_(m), was_training_(m.is_training()) { m.eval(); }
  ~EvalModeGuard() { m_.train(was_training_); }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  nn::Module& m_;
  bool was_training_;
};

// images: (B, H, W, C) u8 -> (B, C, out_h, out_w) f32, (pixel / 255 - mean) / std. A size of 0
// keeps the image's; another size resizes the whole image (bilinear, as the views are made).
Tensor to_input(const Tensor& images, const Normalisation& norm, int out_h = 0, int out_w = 0);

// The backbone's global feature of every image: (N, D) f32 on the CPU. Runs in eval mode
// (batch norm on running statistics, no dropout) without a graph, in batches of batch_size,
// and leaves the backbone in the mode it found it in. input_size 0 keeps the image size.
Tensor extract_features(nn::Module& backbone, const data::ImageSet& set, const Normalisation& norm,
                        int64_t batch_size = 256, int input_size = 0);
// The same, split over the ranks of `group` (mpirun / srun): each rank embeds an equal slice of
// the images (the last padded) and the slices are gathered, so every rank returns all (N, D)
// features. An image's features do not depend on the others in eval mode, so the result is
// the one-process result. One rank: extract_features.
Tensor extract_features(nn::Module& backbone, const data::ImageSet& set, const Normalisation& norm,
                        int64_t batch_size, int input_size, dist::Group& group);

// The raw-pixel baseline's features: the normalised images flattened, (N, C * H * W) f32.
Tensor pixel_features(const data::ImageSet& set, const Normalisation& norm);

// Share of predictions equal to the labels, in percent. predictions, labels: (N) i64.
double top1_accuracy(const Tensor& predictions, const Tensor& labels);

// numpy.percentile(v, q) with its default linear interpolation; `sorted` ascending, not empty.
double percentile_sorted(const std::vector<double>& sorted, double q);

// A distribution in numbers: population standard deviation, numpy's quartiles.
struct Summary {
  int64_t count = 0;
  double mean = 0, std = 0, min = 0, q1 = 0, median = 0, q3 = 0, max = 0;
};
Summary summarize(std::vector<double> values);  // siam::Error when empty

// ---------------------------------------------------------------- kNN

struct KnnOptions {
  std::vector<int64_t> k = {20, 200};
  double temperature = 0.07;  // DINO's; 0.1 is the other common choice
  int64_t batch_size = 256;   // test rows per similarity block
};

// DINO's weighted kNN: features are L2-normalised, each test row's k most similar training
// rows vote for their labels with weight exp(sim / T), and the class with the largest total
// wins (ties: the lowest class index). Similarities are computed in the features' dtype (f64
// stays f64, the rest is f32), votes in f64; equal similarities rank the lower training index first.
// train_features (N, D), train_labels (N) i64 in [0, num_classes), test_features (M, D)
// -> one (M) i64 prediction tensor per entry of options.k.
std::vector<Tensor> knn_predict(const Tensor& train_features, const Tensor& train_labels,
                                const Tensor& test_features, int num_classes, const KnnOptions& options = {});

struct KnnResult {
  int64_t k = 0;
  double top1 = 0;  // percent
};
// test_labels: (M) i64.
std::vector<KnnResult> knn_eval(const Tensor& train_features, const Tensor& train_labels,
                                const Tensor& test_features, const Tensor& test_labels, int num_classes,
                                const KnnOptions& options = {});

// ---------------------------------------------------------------- linear probe

struct LinearProbeOptions {
  int64_t epochs = 100;
  double lr = 0.1;             // the cosine schedule's start; it ends at 0 after the last step
  double momentum = 0.9;
  double weight_decay = 0.0;   // torch.optim.SGD's: on the weight and the bias
  int64_t batch_size = 256;    // the last batch of an epoch may be short
  // Standardise each feature with the training split's mean and (population) standard
  // deviation, a zero deviation counting as 1 (scikit-learn's StandardScaler): one learning
  // rate then suits every backbone.
  bool standardise = true;
  uint64_t seed = 0;           // epoch e's order is the e-th randperm(N) of Generator(seed)
  // Initial weight (K, D) and bias (K); undefined: weight N(0, 0.01) from Generator(seed,
  // 1 << 40) and bias 0 (DINO's linear evaluation).
  Tensor init_weight{}, init_bias{};
};

struct LinearProbeResult {
  double train_top1 = 0, test_top1 = 0;  // percent
  std::vector<double> epoch_loss;        // mean cross-entropy over each epoch's batches
  Tensor weight, bias;                   // (K, D), (K): the trained layer (on standardised features)
};

// Trains one linear layer with cross-entropy and SGD (momentum, cosine schedule per step) on
// frozen features, in their dtype. train_x (N, D), train_y (N) i64, test_x (M, D), test_y (M) i64.
LinearProbeResult linear_probe(const Tensor& train_x, const Tensor& train_y, const Tensor& test_x,
                               const Tensor& test_y, int num_classes, const LinearProbeOptions& options = {});

// ---------------------------------------------------------------- semi-supervised fine-tuning

// A class-balanced subset: from each class, round(fraction x its count) images (at least
// one), drawn by a seeded permutation; sorted indices into labels (N) i64.
std::vector<int64_t> balanced_subset(const Tensor& labels, int num_classes, double fraction, uint64_t seed);

struct FinetuneOptions {
  double fraction = 0.1;       // share of the training labels: 0.01 or 0.1 in the protocol
  int64_t epochs = 20;
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 0.0;
  int64_t batch_size = 64;     // small: 1% of a 60k set is 600 images
  uint64_t seed = 0;
  // SimCLR's fine-tuning augmentation: a random resized crop and a horizontal flip.
  bool augment = true;
  float crop_scale_min = 0.2f;
  float flip_p = 0.5f;
  int input_size = 0;          // 0 keeps the image size
};

struct FinetuneResult {
  int64_t labelled = 0;        // training images used
  double test_top1 = 0;        // percent
  std::vector<double> epoch_loss;
};

// Fine-tunes the whole backbone plus a new linear head (feature_dim -> num_classes, weight
// N(0, 0.01) from Generator(seed), bias 0) with cross-entropy and SGD + cosine, then reports
// top-1 on the test set in eval mode. The backbone's weights are changed.
FinetuneResult finetune(nn::Module& backbone, int64_t feature_dim, const data::ImageSet& train,
                        const data::ImageSet& test, const Normalisation& norm, const FinetuneOptions& options);

}  // namespace siam::apps
