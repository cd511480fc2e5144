#pragma once
// Dataset readers. Each decodes its files once into an ImageSet: a u8 (N, H, W, C) cache that
// the augmentation executor reads views from (on the CPU now, copied whole to the GPU later).
// Every malformed input is a siam::Error naming the file, the offset or line, what was
// expected and what was found.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"

namespace siam::data {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct ImageSet {
  Tensor images;  // (N, H, W, C) u8, contiguous, HWC
  Tensor labels;  // (N) i64; -1 where the set has no labels (STL-10 unlabeled, pair lists)
  int num_classes = 0;
  std::vector<std::string> class_names;
  std::string name;

  int64_t size() const { return images.size(0); }
  int64_t height() const { return images.size(1); }
  int64_t width() const { return images.size(2); }
  int64_t channels() const { return images.size(3); }
};

// ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

// Parses one IDX file held in memory: magic 0x0000 08 D (unsigned bytes, D dimensions),
// D big-endian u32 sizes, then the data, nothing after it. `dims` is the number of
// dimensions the caller needs (3 for images, 1 for labels). Returns a u8 tensor of that shape.
Tensor parse_idx(std::string_view bytes, const std::string& name, int dims);

// Reads an IDX image file (N, H, W) and its label file (N); plain or gzip (detected from the
// content, not the name). Labels must be < class_names.size(); with no names, the number of
// classes is the largest label + 1 and the names are the label numbers.
ImageSet load_idx(const std::string& images_path, const std::string& labels_path,
                  const std::string& name, std::vector<std::string> class_names = {});

// split: "train" or "test". Looks in `dir` for {train,t10k}-{images-idx3,labels-idx1}-ubyte,
// plain or with .gz (Debian's dataset-fashion-mnist installs the .gz files in kFashionMnistDir).
ImageSet load_fashion_mnist(const std::string& split, const std::string& dir = kFashionMnistDir);
ImageSet load_mnist(const std::string& split, const std::string& dir);

// ---------------------------------------------------------------- CIFAR

enum class CifarKind { cifar10, cifar100_fine, cifar100_coarse };

// Parses CIFAR binary records held in memory: CIFAR-10 records are <label> + 3072 pixel bytes,
// CIFAR-100 records <coarse label> <fine label> + 3072; pixels are planar R, G, B 32x32.
ImageSet parse_cifar(std::string_view bytes, const std::string& name, CifarKind kind);

// dir holds the binary release: data_batch_1.bin .. data_batch_5.bin and test_batch.bin
// (cifar-10-batches-bin/). split: "train" or "test".
ImageSet load_cifar10(const std::string& dir, const std::string& split);
// dir holds train.bin and test.bin (cifar-100-binary/). `coarse` picks the 20 superclass labels
// instead of the 100 fine ones.
ImageSet load_cifar100(const std::string& dir, const std::string& split, bool coarse = false);

// ---------------------------------------------------------------- STL-10

// dir holds the binary release (stl10_binary/): split "train" or "test" reads
// <split>_X.bin (N x 3 x 96 x 96, each channel column-major) and <split>_y.bin (N bytes,
// labels 1..10, stored as 0..9); "unlabeled" reads unlabeled_X.bin with labels -1.
ImageSet load_stl10(const std::string& dir, const std::string& split);

// ---------------------------------------------------------------- decoded images

// How folders of encoded images (PNG, JPEG, BMP, TGA, GIF: what stb_image decodes) become
// one cache. With height and width 0 every image must have the size of the first; otherwise
// each is resized on load (stb_image_resize: filtered, so downscaling is antialiased).
struct DecodeOptions {
  int height = 0, width = 0;
  int channels = 3;  // 1 (grey) or 3 (RGB); stb_image converts
};

// dir/<class>/<image>: one sub-folder per class, classes and files in sorted name order
// (torchvision's ImageFolder). Files without an image extension are not images and are
// skipped; a class folder with no image is an error.
ImageSet load_image_folder(const std::string& dir, const DecodeOptions& opt = {});

// A curated list of positive pairs: a CSV file, one pair per line, two image paths separated
// by a comma, each relative to the CSV's folder or absolute. Blank lines and lines starting
// with '#' are skipped. Every distinct image is decoded once; `images` has no labels.
struct PairList {
  ImageSet images;
  std::vector<std::array<int64_t, 2>> pairs;  // indices into images
};
PairList load_pair_list(const std::string& csv_path, const DecodeOptions& opt = {});

// dir/<video>/<frame>: one folder per video, frames in sorted file-name order. The frames of
// all videos are one ImageSet whose label is the video's number (class_names: the folders).
struct VideoSet {
  ImageSet frames;
  std::vector<int64_t> start;  // (V + 1): video v is frames start[v] .. start[v + 1] - 1
  int64_t num_videos() const { return static_cast<int64_t>(start.size()) - 1; }
};
VideoSet load_video_folders(const std::string& dir, const DecodeOptions& opt = {});

// Reads a whole file, gunzipping when it starts with the gzip magic bytes.
std::string read_file_bytes(const std::string& path);

}  // namespace siam::data
