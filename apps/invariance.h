#pragma once
// The invariance measurement of "Demystifying contrastive SSL" (methods.md, "Invariance
// measurement"): how consistently each feature dimension ("neuron") fires across the images
// of one target seen under one transformation, relative to how often it fires at all.
//
// For neuron i: the threshold t_i is its activation at percentile p of all images, with
// p = min((1 - 1/#classes) x 100, 95) (numpy.percentile's linear interpolation); the global
// firing rate G(i) is the share of all images with activation > t_i. For each set, the local
// firing rate is the share of the set's images above t_i; sets with fewer than 3 images and,
// per neuron, sets where it never fires are skipped; the rates of a class's remaining sets are
// averaged into L_c(i). Neurons with G(i) = 0 or no remaining set in the class take no part.
// Score of class c at K: the mean of the K largest L_c(i) / G(i) (all of them when fewer
// than K neurons take part); the invariance score is the mean over classes that have any,
// multiplied by (100 - p) so a perfectly invariant neuron (L = 1, G = (100 - p) / 100) scores 100.
#include <cstdint>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "tensor/tensor.h"

namespace siam::apps {

// Images grouped into sets, each set one target under one transformation, each set of one class.
struct InvarianceSets {
  std::string name;                // "occlusion", "viewpoint", "illumination", "instance", a folder
  data::ImageSet images;           // every set's images, set after set; labels: the set's class
  std::vector<int64_t> set_start;  // (S + 1): set s is images set_start[s] .. set_start[s + 1] - 1
  std::vector<int> set_class;      // (S)
  int num_classes = 0;
  int64_t num_sets() const { return static_cast<int64_t>(set_class.size()); }
};

struct InvarianceScore {
  std::vector<int64_t> k;        // as asked
  std::vector<double> score;     // one per k
  double percentile = 0;
  int64_t sets_used = 0;         // sets with at least 3 images
  int64_t classes_scored = 0;    // classes with at least one neuron taking part
};

// The percentile of the threshold for a number of classes.
double firing_percentile(int num_classes);

// activations (N, D): one row per image of the sets, in the order of set_start.
InvarianceScore invariance_score(const Tensor& activations, const std::vector<int64_t>& set_start,
                                 const std::vector<int>& set_class, int num_classes,
                                 const std::vector<int64_t>& k = {10, 25});

// ---------------------------------------------------------------- set builders

// Sets made from a labelled ImageSet by controlled transformations: per class, up to
// `sets_per_class` targets (images picked by a seeded permutation), each seen at `levels`
// (>= 3) levels of the transformation:
//   occlusion     a grey (128) square covering 0% .. 60% of the image, at a seeded position;
//   viewpoint     an in-plane rotation from -45 to 45 degrees combined with a horizontal
//                 foreshortening cos(yaw), yaw from -60 to 60 degrees (a turn of the object),
//                 bilinear, black outside the image;
//   illumination  brightness x 0.4 .. 1.6 and, on colour images, a colour cast of +-15% that
//                 turns around the colour wheel with the level;
//   instance      `levels` different images of the class (the target is the class itself).
// Sets keep the source's image size and channels.
enum class Transformation { occlusion, viewpoint, illumination, instance };
const char* transformation_name(Transformation t);
Transformation parse_transformation(const std::string& name);  // siam::Error listing the names

InvarianceSets make_invariance_sets(const data::ImageSet& source, Transformation t, int64_t sets_per_class,
                                    int levels = 7, uint64_t seed = 0);

// dir/<class>/<set>/<image>: one sub-folder per class, one sub-sub-folder per set, images as
// load_image_folder reads them. Every image must have the size of the first unless
// opt gives a size.
InvarianceSets load_invariance_folder(const std::string& dir, const data::DecodeOptions& opt = {});

}  // namespace siam::apps
