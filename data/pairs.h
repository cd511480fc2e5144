#pragma once
// Pair generators: which images each training row shows, and each view's augmentation
// parameters. A generator is pure: the rows of epoch e and every view of a row follow from
// (seed, e, row) alone, so any batch can be rebuilt in any order on any thread.
//
// Randomness: the epoch order is randperm over the rows from Generator(mix(seed), e << 24);
// row r of epoch e draws from Philox (seed, offset(e, r, slot)) where slot 0 holds the row's
// own choices (partner image, mined or not) and slot 1 + t * V + v holds view v of try t
// (tries > 0 only under an overlap constraint). Each slot is 16 counter blocks (64 words).
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/datasets.h"

namespace siam::data {

enum class PairKind {
  augmentation,  // two views of one image
  semantic,      // two different images of one class, or a pair of a curated list
  mined,         // an anchor and one of its precomputed nearest neighbours, mixed with augmentation pairs
  temporal,      // two frames of one video a bounded number of frames apart
};
const char* pair_kind_name(PairKind k);

// The IoU of the two crop boxes of views 0 and 1 (augmentation pairs only).
struct OverlapConstraint {
  enum class Kind { any, zero, interval } kind = Kind::any;
  double lo = 0.0, hi = 1.0;  // interval: lo <= IoU <= hi
  int max_tries = 1000;       // rejection sampling gives up with a siam::Error after this many
};

enum class SemanticMode {
  // Every image is the anchor of one row per epoch, paired with a different image of its
  // class: the same number of pairs (N) and the same class composition as an augmentation run.
  matched,
  // Every unordered pair of two images of one class, once per epoch (grows as n^2 per class:
  // meant for few images per class).
  all_pairs,
};

struct PairConfig {
  PairKind kind = PairKind::augmentation;
  // One recipe per view: 2 for pairs, 2 + N for multi-crop (DINO: dino_views). View v shows
  // the row's first image when v is even and its second when v is odd.
  std::vector<AugmentConfig> views;
  uint64_t seed = 0;
  OverlapConstraint overlap;                         // augmentation
  SemanticMode semantic_mode = SemanticMode::matched;  // semantic, from labels
  double mined_ratio = 0.5;      // mined: share of rows that are anchor-neighbour pairs
  double mined_threshold = 0.0;  // mined: lowest cosine similarity a usable neighbour has
  int64_t min_gap = 1, max_gap = 8;  // temporal: frames apart, inclusive
};

// Precomputed nearest neighbours of every image (by the cosine similarity of a pretrained
// encoder's embeddings of the un-augmented images), best first.
struct Neighbours {
  Tensor indices;       // (N, k) i64
  Tensor similarities;  // (N, k) f32
};
// safetensors with tensors "indices" and "similarities" and metadata format=siam.neighbours,
// format_version=1 and `extra` (provenance: the encoder, the data set, ...).
void save_neighbours(const std::string& path, const Neighbours& nb,
                     const std::map<std::string, std::string>& extra = {});
Neighbours load_neighbours(const std::string& path);

struct ViewSpec {
  int64_t image;  // index into the ImageSet the generator was built on
  AugmentParams params;
};

struct BatchPlan {
  std::vector<int64_t> rows;    // (B) row ids of the epoch
  std::vector<PairKind> kinds;  // (B) what each row is (mined runs mix mined and augmentation rows)
  std::vector<std::vector<ViewSpec>> views;  // (V, B)
};

class PairGenerator {
 public:
  // augmentation, or semantic pairs from the labels.
  PairGenerator(const PairConfig& cfg, const ImageSet& images);
  // semantic: the list's pairs; augmentation: the matched baseline for the list, one row per
  // listed pair showing one of its two images (picked per epoch) in every view, so both runs
  // have the same pairs per epoch and the same images.
  PairGenerator(const PairConfig& cfg, const PairList& list);
  // mined.
  PairGenerator(const PairConfig& cfg, const ImageSet& images, const Neighbours& nb);
  // temporal.
  PairGenerator(const PairConfig& cfg, const VideoSet& videos);

  const PairConfig& config() const { return cfg_; }
  int num_views() const { return static_cast<int>(cfg_.views.size()); }
  int64_t num_images() const { return num_images_; }
  int64_t image_height() const { return src_h_; }
  int64_t image_width() const { return src_w_; }
  int64_t rows_per_epoch() const { return rows_; }

  // The epoch's row order: a permutation of 0 .. rows_per_epoch() - 1.
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // The images and views of the given rows of an epoch.
  BatchPlan plan(int64_t epoch, const int64_t* rows, int64_t count) const;
  // Batch `index` of `batch_size` rows of the epoch (the last one may be short).
  BatchPlan plan_batch(int64_t epoch, int64_t index, int64_t batch_size) const;

  // What a contact sheet labels row b of a plan with.
  struct RowInfo {
    PairKind kind = PairKind::augmentation;
    int64_t time_gap = -1;    // temporal rows: frames between the two views' frames
    double similarity = NAN;  // mined rows: the neighbour's cosine similarity to the anchor
  };
  RowInfo row_info(const BatchPlan& plan, int64_t b) const;

 private:
  void init(const ImageSet& images);
  uint64_t offset(int64_t epoch, int64_t row, int64_t slot) const;
  std::array<int64_t, 2> row_images(int64_t epoch, int64_t row, PairKind& kind) const;

  PairConfig cfg_;
  int64_t num_images_ = 0, src_h_ = 0, src_w_ = 0, rows_ = 0;
  std::vector<int64_t> labels_;
  // Groups of image indices in CSR form: class members (semantic), usable neighbours of each
  // image (mined), frames of each video (temporal).
  std::vector<int64_t> group_start_, group_items_;
  std::vector<int64_t> group_of_;            // image -> its group (semantic, temporal)
  std::vector<float> group_sim_;             // mined: the similarity of each usable neighbour
  std::vector<std::array<int64_t, 2>> pairs_;  // curated or all_pairs rows
  bool from_list_ = false;
  std::vector<int64_t> anchors_;             // temporal: frames that have a partner in range
};

}  // namespace siam::data
