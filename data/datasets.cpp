#include "data/datasets.h"

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

namespace siam::data {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kDigits = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
const std::vector<std::string> kFashionNames = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
const std::vector<std::string> kCifar10Names = {"airplane", "automobile", "bird", "cat", "deer",
                                                "dog", "frog", "horse", "ship", "truck"};
const std::vector<std::string> kCifar100Fine = {
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"};
const std::vector<std::string> kCifar100Coarse = {
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"};
const std::vector<std::string> kStl10Names = {"airplane", "bird", "car", "cat", "deer",
                                              "dog", "horse", "monkey", "ship", "truck"};

void require_split(const std::string& split, std::initializer_list<const char*> allowed, const char* what) {
  for (const char* a : allowed)
    if (split == a) return;
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  fail(what, ": unknown split '", split, "', expected one of ", list);
}

void require_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("file not found: ", path);
  if (fs::is_directory(path, ec)) fail(path, ": expected a file, found a directory");
}

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string hex8(uint8_t v) {
  char buf[5];
  std::snprintf(buf, sizeof buf, "0x%02x", v);
  return buf;
}

std::string hex32(uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

ImageSet make_set(Tensor images, Tensor labels, std::vector<std::string> names, std::string set_name) {
  ImageSet s;
  s.images = std::move(images);
  s.labels = std::move(labels);
  s.num_classes = static_cast<int>(names.size());
  s.class_names = std::move(names);
  s.name = std::move(set_name);
  return s;
}

}  // namespace

// ---------------------------------------------------------------- files

std::string read_file_bytes(const std::string& path) {
  require_file(path);
  // gzread passes a file without the gzip magic through unchanged, so one path reads both.
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail("cannot open ", path, ": ", std::strerror(errno));
  std::string out;
  constexpr size_t kChunk = 1 << 20;
  for (;;) {
    size_t old = out.size();
    out.resize(old + kChunk);
    int n = gzread(f, out.data() + old, static_cast<unsigned>(kChunk));
    if (n < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      fail(path, ": cannot read after ", old, " decompressed bytes: ", msg);
    }
    out.resize(old + static_cast<size_t>(n));
    if (n == 0) break;
  }
  int code = Z_OK;
  std::string msg = gzerror(f, &code);
  gzclose(f);
  if (code != Z_OK && code != Z_STREAM_END)
    fail(path, ": corrupt or truncated gzip data after ", out.size(), " decompressed bytes: ", msg);
  return out;
}

// ---------------------------------------------------------------- IDX

Tensor parse_idx(std::string_view bytes, const std::string& name, int dims) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 4)
    fail(name, ": truncated IDX header: expected at least 4 bytes, found ", bytes.size());
  uint32_t magic = be32(p);
  uint32_t want = 0x00000800u | static_cast<uint32_t>(dims);
  if (p[0] != 0 || p[1] != 0)
    fail(name, ": not an IDX file: magic number ", hex32(magic), " at offset 0, expected ", hex32(want));
  if (p[2] != 0x08)
    fail(name, ": IDX magic ", hex32(magic), " at offset 0 has data type ", hex8(p[2]),
         ", expected 0x08 (unsigned bytes, magic ", hex32(want), ")");
  if (p[3] != dims)
    fail(name, ": IDX magic ", hex32(magic), " at offset 0 gives ", int{p[3]}, " dimensions, expected ",
         dims, " (magic ", hex32(want), ")");
  size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (bytes.size() < header)
    fail(name, ": truncated IDX header: expected ", header, " bytes, found ", bytes.size());
  Shape shape;
  uint64_t numel = 1;
  bool overflow = false;
  std::string dims_str;
  for (int d = 0; d < dims; ++d) {
    uint32_t n = be32(p + 4 + 4 * d);
    shape.push_back(n);
    dims_str += (d ? " x " : "") + std::to_string(n);
    if (n != 0 && numel > std::numeric_limits<uint64_t>::max() / n) overflow = true;
    numel *= n;
  }
  if (dims >= 3 && (shape[1] == 0 || shape[2] == 0))
    fail(name, ": IDX header at offset 4 gives images of ", shape[1], " x ", shape[2], " pixels, expected non-empty images");
  uint64_t have = bytes.size() - header;
  if (overflow || numel != have)
    fail(name, ": IDX header at offset 4 gives ", dims_str, (overflow ? " (overflows)" : ""), " = ",
         overflow ? std::string("too many") : std::to_string(numel), " data bytes, found ", have,
         " after the ", header, "-byte header (", have < numel || overflow ? "truncated file" : "extra bytes at the end", ")");
  Tensor t = empty(shape, {DType::u8});
  if (numel) std::memcpy(t.data<uint8_t>(), p + header, numel);
  return t;
}

ImageSet load_idx(const std::string& images_path, const std::string& labels_path, const std::string& name,
                  std::vector<std::string> class_names) {
  Tensor images = parse_idx(read_file_bytes(images_path), images_path, 3);
  Tensor raw = parse_idx(read_file_bytes(labels_path), labels_path, 1);
  int64_t n = images.size(0);
  if (raw.size(0) != n)
    fail(labels_path, ": has ", raw.size(0), " labels, expected ", n, " (one per image of ", images_path, ")");
  const uint8_t* lab = raw.data<uint8_t>();
  int max_label = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (!class_names.empty() && lab[i] >= class_names.size())
      fail(labels_path, ": label ", int{lab[i]}, " at offset ", 8 + i, " (item ", i, ") is out of range, expected 0..",
           class_names.size() - 1);
    max_label = std::max(max_label, int{lab[i]});
  }
  if (class_names.empty())
    for (int c = 0; c <= max_label; ++c) class_names.push_back(std::to_string(c));
  Tensor labels = empty({n}, {DType::i64});
  for (int64_t i = 0; i < n; ++i) labels.data<int64_t>()[i] = lab[i];
  Shape hwc{n, images.size(1), images.size(2), 1};
  return make_set(images.as_strided(hwc, contiguous_strides(hwc), 0), labels, std::move(class_names), name);
}

namespace {

// The {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] pair of an MNIST-style folder.
ImageSet load_mnist_style(const std::string& split, const std::string& dir, const char* what, const char* hint,
                          const std::string& name, const std::vector<std::string>& classes) {
  require_split(split, {"train", "test"}, what);
  const std::string stem = dir + "/" + (split == "train" ? "train" : "t10k");
  auto pick = [&](const std::string& base) {
    std::error_code ec;
    if (fs::exists(base, ec)) return base;
    if (fs::exists(base + ".gz", ec)) return base + ".gz";
    fail(what, ": neither ", base, " nor ", base, ".gz exists", hint);
  };
  const std::string images = pick(stem + "-images-idx3-ubyte");
  const std::string labels = pick(stem + "-labels-idx1-ubyte");
  return load_idx(images, labels, name + "-" + split, classes);
}

}  // namespace

ImageSet load_fashion_mnist(const std::string& split, const std::string& dir) {
  return load_mnist_style(split, dir, "Fashion-MNIST", " (on Debian: apt-get install dataset-fashion-mnist)",
                          "fashion-mnist", kFashionNames);
}

ImageSet load_mnist(const std::string& split, const std::string& dir) {
  return load_mnist_style(split, dir, "MNIST", "", "mnist", kDigits);
}

// ---------------------------------------------------------------- CIFAR

namespace {

constexpr int64_t kCifarPixels = 3 * 32 * 32;

struct CifarLayout {
  int64_t label_bytes;
  int label_index;  // which label byte the set uses
  const std::vector<std::string>* names;
  const char* what;
};

CifarLayout cifar_layout(CifarKind kind) {
  switch (kind) {
    case CifarKind::cifar10: return {1, 0, &kCifar10Names, "CIFAR-10"};
    case CifarKind::cifar100_fine: return {2, 1, &kCifar100Fine, "CIFAR-100"};
    case CifarKind::cifar100_coarse: return {2, 0, &kCifar100Coarse, "CIFAR-100"};
  }
  SIAM_CHECK(false, "unknown CifarKind");
}

ImageSet concat_sets(const std::vector<ImageSet>& parts, const std::string& name) {
  SIAM_CHECK(!parts.empty(), "concat of no image sets");
  const ImageSet& first = parts[0];
  int64_t n = 0;
  for (const ImageSet& p : parts) n += p.size();
  Tensor images = empty({n, first.height(), first.width(), first.channels()}, {DType::u8});
  Tensor labels = empty({n}, {DType::i64});
  int64_t at = 0, per = first.height() * first.width() * first.channels();
  for (const ImageSet& p : parts) {
    if (p.size()) {
      std::memcpy(images.data<uint8_t>() + at * per, p.images.data<uint8_t>(), p.size() * per);
      std::memcpy(labels.data<int64_t>() + at, p.labels.data<int64_t>(), p.size() * sizeof(int64_t));
    }
    at += p.size();
  }
  return make_set(images, labels, first.class_names, name);
}

}  // namespace

ImageSet parse_cifar(std::string_view bytes, const std::string& name, CifarKind kind) {
  CifarLayout lay = cifar_layout(kind);
  const int64_t record = lay.label_bytes + kCifarPixels;
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size == 0) fail(name, ": empty file, expected ", lay.what, " records of ", record, " bytes");
  if (size % record != 0)
    fail(name, ": ", size, " bytes is not a whole number of ", record, "-byte ", lay.what, " records: the record at offset ",
         size / record * record, " has ", size % record, " bytes (truncated or mis-sized file)");
  const int64_t n = size / record;
  Tensor images = empty({n, 32, 32, 3}, {DType::u8});
  Tensor labels = empty({n}, {DType::i64});
  const auto* src = reinterpret_cast<const uint8_t*>(bytes.data());
  uint8_t* img = images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* rec = src + i * record;
    // CIFAR-100 carries both labels; a bad one of either means a corrupt file.
    for (int64_t b = 0; b < lay.label_bytes; ++b) {
      int limit = lay.label_bytes == 1 ? 10 : (b == 0 ? 20 : 100);
      if (rec[b] >= limit)
        fail(name, ": ", lay.label_bytes == 1 ? "label " : (b == 0 ? "coarse label " : "fine label "), int{rec[b]},
             " at offset ", i * record + b, " (record ", i, ") is out of range, expected 0..", limit - 1);
    }
    labels.data<int64_t>()[i] = rec[lay.label_index];
    const uint8_t* planes = rec + lay.label_bytes;
    for (int64_t p = 0; p < 1024; ++p)
      for (int64_t c = 0; c < 3; ++c) img[(i * 1024 + p) * 3 + c] = planes[c * 1024 + p];
  }
  return make_set(images, labels, *lay.names, name);
}

ImageSet load_cifar10(const std::string& dir, const std::string& split) {
  require_split(split, {"train", "test"}, "CIFAR-10");
  std::vector<std::string> files;
  if (split == "train")
    for (int b = 1; b <= 5; ++b) files.push_back(dir + "/data_batch_" + std::to_string(b) + ".bin");
  else
    files.push_back(dir + "/test_batch.bin");
  std::vector<ImageSet> parts;
  for (const std::string& f : files) parts.push_back(parse_cifar(read_file_bytes(f), f, CifarKind::cifar10));
  return concat_sets(parts, "cifar10-" + split);
}

ImageSet load_cifar100(const std::string& dir, const std::string& split, bool coarse) {
  require_split(split, {"train", "test"}, "CIFAR-100");
  std::string f = dir + "/" + split + ".bin";
  ImageSet s = parse_cifar(read_file_bytes(f), f, coarse ? CifarKind::cifar100_coarse : CifarKind::cifar100_fine);
  s.name = std::string(coarse ? "cifar100-coarse-" : "cifar100-") + split;
  return s;
}

// ---------------------------------------------------------------- STL-10

ImageSet load_stl10(const std::string& dir, const std::string& split) {
  require_split(split, {"train", "test", "unlabeled"}, "STL-10");
  constexpr int64_t kSide = 96, kRecord = 3 * kSide * kSide;
  const std::string xpath = dir + "/" + split + "_X.bin";
  require_file(xpath);
  std::error_code ec;
  const int64_t xsize = static_cast<int64_t>(fs::file_size(xpath, ec));
  if (ec) fail("cannot read the size of ", xpath, ": ", ec.message());
  if (xsize == 0) fail(xpath, ": empty file, expected STL-10 images of ", kRecord, " bytes");
  if (xsize % kRecord != 0)
    fail(xpath, ": ", xsize, " bytes is not a whole number of ", kRecord, "-byte STL-10 images: the image at offset ",
         xsize / kRecord * kRecord, " has ", xsize % kRecord, " bytes (truncated or mis-sized file)");
  const int64_t n = xsize / kRecord;
  Tensor labels = full({n}, -1, {DType::i64});
  if (split != "unlabeled") {
    const std::string ypath = dir + "/" + split + "_y.bin";
    std::string y = read_file_bytes(ypath);
    if (static_cast<int64_t>(y.size()) != n)
      fail(ypath, ": has ", y.size(), " labels, expected ", n, " (one byte per image of ", xpath, ")");
    for (int64_t i = 0; i < n; ++i) {
      int v = static_cast<uint8_t>(y[i]);
      if (v < 1 || v > 10) fail(ypath, ": label ", v, " at offset ", i, " is out of range, expected 1..10");
      labels.data<int64_t>()[i] = v - 1;
    }
  }
  // The unlabeled split is 2.7 GB: stream it in chunks rather than holding the file twice.
  Tensor images = empty({n, kSide, kSide, 3}, {DType::u8});
  std::ifstream in(xpath, std::ios::binary);
  if (!in) fail("cannot open ", xpath, ": ", std::strerror(errno));
  constexpr int64_t kChunk = 256;
  std::vector<uint8_t> buf(kChunk * kRecord);
  uint8_t* dst = images.data<uint8_t>();
  for (int64_t first = 0; first < n; first += kChunk) {
    int64_t count = std::min(kChunk, n - first);
    in.read(reinterpret_cast<char*>(buf.data()), count * kRecord);
    if (in.gcount() != count * kRecord)
      fail(xpath, ": read ", in.gcount(), " bytes at offset ", first * kRecord, ", expected ", count * kRecord,
           " (the file shrank while reading)");
    for (int64_t k = 0; k < count; ++k) {
      const uint8_t* rec = buf.data() + k * kRecord;
      uint8_t* img = dst + (first + k) * kRecord;
      // Each channel plane is column-major (MATLAB order): byte col * 96 + row.
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t col = 0; col < kSide; ++col)
          for (int64_t row = 0; row < kSide; ++row)
            img[(row * kSide + col) * 3 + c] = rec[c * kSide * kSide + col * kSide + row];
    }
  }
  return make_set(images, labels, kStl10Names, "stl10-" + split);
}

// ---------------------------------------------------------------- decoded images

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  for (const char* e : {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".gif", ".ppm", ".pgm"})
    if (ext == e) return true;
  return false;
}

std::string read_plain(const std::string& path) {
  require_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path, ": ", std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void check_options(const DecodeOptions& opt) {
  if (opt.channels != 1 && opt.channels != 3) fail("DecodeOptions.channels is ", opt.channels, ", expected 1 or 3");
  if (opt.height < 0 || opt.width < 0 || (opt.height == 0) != (opt.width == 0))
    fail("DecodeOptions size is ", opt.height, " x ", opt.width,
         ", expected both 0 (keep the images' size) or both positive (resize on load)");
}

// One image decoded into `dst` (h * w * channels bytes), resized when the options ask.
// Returns an empty string, or the error message (OpenMP workers cannot throw).
std::string decode_into(const std::string& path, const std::string& context, const DecodeOptions& opt, int h, int w,
                        const std::string& first, uint8_t* dst) {
  try {
    std::string bytes = read_plain(path);
    int iw = 0, ih = 0, comp = 0;
    uint8_t* pix = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
                                         &iw, &ih, &comp, opt.channels);
    if (!pix) return detail::cat(context, path, ": cannot decode image: ", stbi_failure_reason());
    std::string err;
    if (opt.height == 0) {
      if (iw != w || ih != h)
        err = detail::cat(context, path, ": image is ", ih, " x ", iw, " (height x width), expected ", h, " x ", w, " like ", first,
                          " (set DecodeOptions height and width to resize on load)");
      else
        std::memcpy(dst, pix, static_cast<size_t>(h) * w * opt.channels);
    } else if (!stbir_resize_uint8(pix, iw, ih, 0, dst, w, h, 0, opt.channels)) {
      err = detail::cat(context, path, ": cannot resize ", ih, " x ", iw, " to ", h, " x ", w, " (height x width)");
    }
    stbi_image_free(pix);
    return err;
  } catch (const Error& e) {
    return context + e.what();
  }
}

// Decodes every file into one (N, H, W, C) u8 tensor; contexts[i] prefixes file i's errors.
Tensor decode_all(const std::vector<std::string>& files, const std::vector<std::string>& contexts,
                  const DecodeOptions& opt) {
  check_options(opt);
  SIAM_CHECK(files.size() == contexts.size() && !files.empty(), "decode_all needs one context per file");
  int h = opt.height, w = opt.width;
  if (h == 0) {
    std::string bytes = read_plain(files[0]);
    int comp = 0;
    if (!stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()), &w, &h,
                               &comp))
      fail(contexts[0], files[0], ": cannot decode image: ", stbi_failure_reason());
  }
  const int64_t n = static_cast<int64_t>(files.size());
  const int64_t per = static_cast<int64_t>(h) * w * opt.channels;
  Tensor images = empty({n, h, w, opt.channels}, {DType::u8});
  uint8_t* dst = images.data<uint8_t>();
  std::vector<std::string> errors(n);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i) errors[i] = decode_into(files[i], contexts[i], opt, h, w, files[0], dst + i * per);
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(e);
  return images;
}

struct Folder {
  std::string name;
  std::vector<std::string> files;
};

// dir/<sub>/<files>: sub-folders and files in sorted name order. Hidden entries (".git",
// ".ipynb_checkpoints") are tool litter, not classes or images.
std::vector<Folder> list_folders(const std::string& dir, const char* what, const char* sub) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(what, ": folder not found: ", dir);
  std::vector<Folder> out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (e.is_directory(ec) && name[0] != '.') out.push_back({name, {}});
  }
  if (ec) fail(what, ": cannot list ", dir, ": ", ec.message());
  if (out.empty()) fail(dir, ": no ", sub, " folders found, expected ", dir, "/<", sub, ">/<image files>");
  std::sort(out.begin(), out.end(), [](const Folder& a, const Folder& b) { return a.name < b.name; });
  for (Folder& f : out) {
    std::string path = dir + "/" + f.name;
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.is_regular_file(ec) && e.path().filename().string()[0] != '.' && is_image_file(e.path()))
        f.files.push_back(e.path().string());
    if (ec) fail(what, ": cannot list ", path, ": ", ec.message());
    if (f.files.empty())
      fail(path, ": no image files in this ", sub, " folder, expected .png, .jpg, .jpeg, .bmp, .tga, .gif, .ppm or .pgm");
    std::sort(f.files.begin(), f.files.end());
  }
  return out;
}

ImageSet decode_folders(const std::vector<Folder>& folders, const DecodeOptions& opt, const std::string& name) {
  std::vector<std::string> files, contexts;
  std::vector<std::string> names;
  std::vector<int64_t> label;
  for (size_t c = 0; c < folders.size(); ++c) {
    names.push_back(folders[c].name);
    for (const std::string& f : folders[c].files) {
      files.push_back(f);
      contexts.emplace_back();
      label.push_back(static_cast<int64_t>(c));
    }
  }
  Tensor images = decode_all(files, contexts, opt);
  Tensor labels = empty({static_cast<int64_t>(label.size())}, {DType::i64});
  std::copy(label.begin(), label.end(), labels.data<int64_t>());
  return make_set(images, labels, std::move(names), name);
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

ImageSet load_image_folder(const std::string& dir, const DecodeOptions& opt) {
  check_options(opt);
  return decode_folders(list_folders(dir, "image folder", "class"), opt, fs::path(dir).filename().string());
}

VideoSet load_video_folders(const std::string& dir, const DecodeOptions& opt) {
  check_options(opt);
  std::vector<Folder> videos = list_folders(dir, "video folders", "video");
  VideoSet v;
  v.start.push_back(0);
  for (const Folder& f : videos) v.start.push_back(v.start.back() + static_cast<int64_t>(f.files.size()));
  v.frames = decode_folders(videos, opt, fs::path(dir).filename().string());
  return v;
}

PairList load_pair_list(const std::string& csv_path, const DecodeOptions& opt) {
  check_options(opt);
  std::string text = read_plain(csv_path);
  const fs::path base = fs::path(csv_path).parent_path();
  PairList out;
  std::map<std::string, int64_t> index;  // resolved path -> image number
  std::vector<std::string> files, contexts;
  size_t pos = 0;
  for (int64_t line = 1; pos < text.size(); ++line) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string row = trim(text.substr(pos, end - pos));
    pos = end + 1;
    if (row.empty() || row[0] == '#') continue;
    std::vector<std::string> fields;
    for (size_t at = 0;;) {
      size_t comma = row.find(',', at);
      fields.push_back(trim(row.substr(at, comma == std::string::npos ? std::string::npos : comma - at)));
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
    std::string where = detail::cat(csv_path, ":", line, ": ");
    if (fields.size() != 2)
      fail(where, "expected two image paths separated by a comma, found ", fields.size(), " field",
           fields.size() == 1 ? "" : "s", " in '", row, "'");
    std::array<int64_t, 2> pair{};
    for (int k = 0; k < 2; ++k) {
      std::string f = fields[k];
      if (f.size() >= 2 && f.front() == '"' && f.back() == '"') f = f.substr(1, f.size() - 2);
      if (f.empty()) fail(where, "path ", k + 1, " is empty");
      fs::path p(f);
      std::string resolved = (p.is_absolute() ? p : base / p).lexically_normal().string();
      std::error_code ec;
      if (!fs::is_regular_file(resolved, ec))
        fail(where, "image '", f, "' not found (looked for ", resolved, ")");
      auto [it, added] = index.emplace(resolved, static_cast<int64_t>(files.size()));
      if (added) {
        files.push_back(resolved);
        contexts.push_back(where);
      }
      pair[k] = it->second;
    }
    if (pair[0] == pair[1]) fail(where, "both paths name the same image ", files[pair[0]], ", expected two different images");
    out.pairs.push_back(pair);
  }
  if (out.pairs.empty()) fail(csv_path, ": no pairs, expected lines of two image paths separated by a comma");
  Tensor images = decode_all(files, contexts, opt);
  Tensor labels = full({images.size(0)}, -1, {DType::i64});
  out.images = make_set(images, labels, {}, fs::path(csv_path).filename().string());
  return out;
}

}  // namespace siam::data
