// Dataset readers on small files in the real formats, written here; every kind of bad input
// gives a siam::Error that names the file and the problem.
#include <gtest/gtest.h>
#include <stb/stb_image_write.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <functional>

#include "data/datasets.h"

using namespace siam;
using namespace siam::data;
namespace fs = std::filesystem;

namespace {

// A fresh folder per test, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() /
           ("siam_data_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string idx_file(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string s = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int k = 3; k >= 0; --k) s.push_back(static_cast<char>((d >> (8 * k)) & 0xff));
  return s + std::string(data.begin(), data.end());
}

// Five 4 x 3 images whose pixels encode (image, row, col), labels 0..4.
constexpr int kN = 5, kH = 4, kW = 3;
uint8_t idx_pixel(int i, int r, int c) { return static_cast<uint8_t>(i * 50 + r * 10 + c); }
std::string idx_images() {
  std::vector<uint8_t> d;
  for (int i = 0; i < kN; ++i)
    for (int r = 0; r < kH; ++r)
      for (int c = 0; c < kW; ++c) d.push_back(idx_pixel(i, r, c));
  return idx_file({kN, kH, kW}, d);
}
std::string idx_labels() { return idx_file({kN}, {0, 1, 2, 3, 4}); }

// Runs f, which must throw siam::Error mentioning every phrase.
template <class F>
void expect_error(F f, std::initializer_list<std::string> phrases) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << *phrases.begin() << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const std::string& p : phrases) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace

// ---------------------------------------------------------------- IDX

TEST(DataReaders, IdxPlainAndGzip) {
  TempDir dir;
  write_file(dir / "img", idx_images());
  write_file(dir / "lab", idx_labels());
  write_gz(dir / "img.gz", idx_images());
  write_gz(dir / "lab.gz", idx_labels());
  for (auto [img, lab] : {std::pair{"img", "lab"}, std::pair{"img.gz", "lab.gz"}}) {
    ImageSet s = load_idx(dir / img, dir / lab, "tiny");
    ASSERT_EQ(s.images.shape(), (Shape{kN, kH, kW, 1}));
    EXPECT_EQ(s.images.dtype(), DType::u8);
    EXPECT_TRUE(s.images.is_contiguous());
    EXPECT_EQ(s.images.at({3, 2, 1, 0}), idx_pixel(3, 2, 1));
    EXPECT_EQ(s.labels.to_vector(), (std::vector<double>{0, 1, 2, 3, 4}));
    EXPECT_EQ(s.num_classes, 5);
    EXPECT_EQ(s.class_names[4], "4");
  }
  expect_error([&] { load_idx(dir / "img", dir / "lab", "t", {"a", "b"}); }, {"lab", "label 2", "offset 10", "expected 0..1"});
}

TEST(DataReaders, FashionMnistFileNames) {
  TempDir dir;
  write_gz(dir / "train-images-idx3-ubyte.gz", idx_images());
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_labels());
  write_file(dir / "t10k-images-idx3-ubyte", idx_images());  // plain files are found too
  write_file(dir / "t10k-labels-idx1-ubyte", idx_labels());
  ImageSet train = load_fashion_mnist("train", dir.path.string());
  EXPECT_EQ(train.size(), kN);
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(train.class_names[9], "Ankle boot");
  EXPECT_EQ(load_fashion_mnist("test", dir.path.string()).size(), kN);
  expect_error([&] { load_fashion_mnist("val", dir.path.string()); }, {"unknown split 'val'", "train, test"});
  expect_error([&] { load_fashion_mnist("train", dir / "nowhere"); },
               {"train-images-idx3-ubyte.gz", "dataset-fashion-mnist"});
}

TEST(DataReaders, IdxBadInput) {
  TempDir dir;
  std::string good = idx_images();
  write_file(dir / "lab", idx_labels());
  struct Case {
    const char* what;
    std::string bytes;
    std::vector<std::string> phrases;
  };
  std::string bad_magic = good;
  bad_magic[0] = 0x12;
  std::string bad_type = good;
  bad_type[2] = 0x0d;
  std::vector<Case> cases = {
      {"empty", "", {"truncated IDX header", "at least 4 bytes, found 0"}},
      {"short header", good.substr(0, 10), {"truncated IDX header", "expected 16 bytes, found 10"}},
      {"truncated data", good.substr(0, good.size() - 7), {"5 x 4 x 3", "= 60 data bytes, found 53", "truncated file"}},
      {"extra bytes", good + "xyz", {"found 63", "extra bytes"}},
      {"wrong magic", bad_magic, {"not an IDX file", "0x12000803", "offset 0", "expected 0x00000803"}},
      {"float data", bad_type, {"data type 0x0d", "expected 0x08"}},
      {"labels as images", idx_labels(), {"gives 1 dimensions, expected 3", "0x00000803"}},
      {"huge dims", idx_file({0xffffffffu, 0xffffffffu, 0xffffffffu}, {}), {"overflows", "truncated"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    write_file(dir / "img", c.bytes);
    try {
      load_idx(dir / "img", dir / "lab", "bad");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(dir / "img"), std::string::npos) << msg;
      for (const std::string& p : c.phrases) EXPECT_NE(msg.find(p), std::string::npos) << p << " not in: " << msg;
    }
  }
  write_file(dir / "img", good);
  write_file(dir / "lab4", idx_file({4}, {0, 1, 2, 3}));
  expect_error([&] { load_idx(dir / "img", dir / "lab4", "t"); }, {"lab4", "has 4 labels, expected 5"});
  expect_error([&] { load_idx(dir / "missing", dir / "lab", "t"); }, {"file not found", "missing"});
  expect_error([&] { load_idx(dir.path.string(), dir / "lab", "t"); }, {"expected a file, found a directory"});
  // A gzip stream cut short.
  write_gz(dir / "img.gz", good);
  std::string gz;
  {
    std::ifstream in(dir / "img.gz", std::ios::binary);
    gz.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  write_file(dir / "cut.gz", gz.substr(0, gz.size() - 12));
  expect_error([&] { load_idx(dir / "cut.gz", dir / "lab", "t"); }, {"cut.gz", "gzip"});
}

TEST(DataReaders, RealFashionMnist) {
  if (!fs::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << kFashionMnistDir << " not installed (apt-get install dataset-fashion-mnist)";
  ImageSet s = load_fashion_mnist("train");
  EXPECT_EQ(s.images.shape(), (Shape{60000, 28, 28, 1}));
  EXPECT_EQ(s.num_classes, 10);
  std::vector<int64_t> count(10, 0);
  for (int64_t i = 0; i < s.size(); ++i) ++count.at(s.labels.data<int64_t>()[i]);
  for (int c = 0; c < 10; ++c) EXPECT_EQ(count[c], 6000) << "class " << c;
}

// ---------------------------------------------------------------- CIFAR

namespace {

uint8_t cifar_pixel(int i, int r, int c, int ch) { return static_cast<uint8_t>(i * 31 + r * 7 + c * 3 + ch * 85); }

// n records starting at image number first; labels label(i).
std::string cifar_records(int first, int n, int label_bytes, const std::function<std::array<uint8_t, 2>(int)>& label) {
  std::string s;
  for (int i = first; i < first + n; ++i) {
    auto l = label(i);
    for (int b = 0; b < label_bytes; ++b) s.push_back(static_cast<char>(l[b]));
    for (int ch = 0; ch < 3; ++ch)
      for (int r = 0; r < 32; ++r)
        for (int c = 0; c < 32; ++c) s.push_back(static_cast<char>(cifar_pixel(i, r, c, ch)));
  }
  return s;
}

}  // namespace

TEST(DataReaders, Cifar10) {
  TempDir dir;
  auto lab = [](int i) { return std::array<uint8_t, 2>{static_cast<uint8_t>(i % 10), 0}; };
  for (int b = 1; b <= 5; ++b) write_file(dir / ("data_batch_" + std::to_string(b) + ".bin"), cifar_records(2 * (b - 1), 2, 1, lab));
  write_file(dir / "test_batch.bin", cifar_records(100, 3, 1, lab));
  ImageSet train = load_cifar10(dir.path.string(), "train");
  ASSERT_EQ(train.images.shape(), (Shape{10, 32, 32, 3}));
  for (int i : {0, 7, 9}) {
    EXPECT_EQ(train.labels.data<int64_t>()[i], i % 10);
    EXPECT_EQ(train.images.at({i, 5, 17, 2}), cifar_pixel(i, 5, 17, 2));
  }
  EXPECT_EQ(train.class_names[1], "automobile");
  ImageSet test = load_cifar10(dir.path.string(), "test");
  EXPECT_EQ(test.size(), 3);
  EXPECT_EQ(test.images.at({1, 31, 0, 0}), cifar_pixel(101, 31, 0, 0));

  std::string good = cifar_records(0, 2, 1, lab);
  write_file(dir / "data_batch_3.bin", good.substr(0, good.size() - 100));
  expect_error([&] { load_cifar10(dir.path.string(), "train"); },
               {"data_batch_3.bin", "6046 bytes", "3073-byte CIFAR-10 records", "offset 3073 has 2973 bytes"});
  std::string bad = good;
  bad[3073] = 10;
  write_file(dir / "data_batch_3.bin", bad);
  expect_error([&] { load_cifar10(dir.path.string(), "train"); },
               {"data_batch_3.bin", "label 10 at offset 3073 (record 1)", "expected 0..9"});
  write_file(dir / "data_batch_3.bin", "");
  expect_error([&] { load_cifar10(dir.path.string(), "train"); }, {"data_batch_3.bin", "empty file"});
  fs::remove(dir / "data_batch_3.bin");
  expect_error([&] { load_cifar10(dir.path.string(), "train"); }, {"file not found", "data_batch_3.bin"});
}

TEST(DataReaders, Cifar100FineAndCoarse) {
  TempDir dir;
  auto lab = [](int i) { return std::array<uint8_t, 2>{static_cast<uint8_t>(i % 20), static_cast<uint8_t>(i * 11 % 100)}; };
  write_file(dir / "train.bin", cifar_records(0, 4, 2, lab));
  ImageSet fine = load_cifar100(dir.path.string(), "train");
  ImageSet coarse = load_cifar100(dir.path.string(), "train", true);
  EXPECT_EQ(fine.num_classes, 100);
  EXPECT_EQ(coarse.num_classes, 20);
  EXPECT_EQ(fine.class_names[99], "worm");
  EXPECT_EQ(coarse.class_names[19], "vehicles_2");
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(fine.labels.data<int64_t>()[i], i * 11 % 100);
    EXPECT_EQ(coarse.labels.data<int64_t>()[i], i % 20);
    EXPECT_EQ(fine.images.at({i, 3, 4, 1}), cifar_pixel(i, 3, 4, 1));
  }
  std::string bad = cifar_records(0, 2, 2, lab);
  bad[3074 + 1] = static_cast<char>(100);
  write_file(dir / "test.bin", bad);
  expect_error([&] { load_cifar100(dir.path.string(), "test"); },
               {"test.bin", "fine label 100 at offset 3075 (record 1)", "expected 0..99"});
  write_file(dir / "test.bin", bad.substr(0, 3074 + 10));
  expect_error([&] { load_cifar100(dir.path.string(), "test"); }, {"3074-byte CIFAR-100 records"});
}

// ---------------------------------------------------------------- STL-10

TEST(DataReaders, Stl10ColumnMajor) {
  TempDir dir;
  constexpr int n = 3, side = 96, rec = 3 * side * side;
  auto px = [](int i, int r, int c, int ch) { return static_cast<uint8_t>(i * 13 + r * 5 + c * 3 + ch * 100); };
  std::string x(n * rec, '\0');
  for (int i = 0; i < n; ++i)
    for (int ch = 0; ch < 3; ++ch)
      for (int c = 0; c < side; ++c)
        for (int r = 0; r < side; ++r) x[i * rec + ch * side * side + c * side + r] = static_cast<char>(px(i, r, c, ch));
  write_file(dir / "train_X.bin", x);
  write_file(dir / "train_y.bin", std::string{1, 10, 4});
  write_file(dir / "unlabeled_X.bin", x.substr(0, 2 * rec));
  ImageSet s = load_stl10(dir.path.string(), "train");
  ASSERT_EQ(s.images.shape(), (Shape{n, side, side, 3}));
  EXPECT_EQ(s.labels.to_vector(), (std::vector<double>{0, 9, 3}));
  EXPECT_EQ(s.class_names[7], "monkey");
  for (auto [i, r, c, ch] : {std::array{0, 0, 1, 0}, {1, 40, 2, 2}, {2, 95, 60, 1}})
    EXPECT_EQ(s.images.at({i, r, c, ch}), px(i, r, c, ch)) << i << " " << r << " " << c << " " << ch;
  ImageSet u = load_stl10(dir.path.string(), "unlabeled");
  EXPECT_EQ(u.size(), 2);
  EXPECT_EQ(u.labels.to_vector(), (std::vector<double>{-1, -1}));

  write_file(dir / "train_y.bin", std::string{1, 0, 4});
  expect_error([&] { load_stl10(dir.path.string(), "train"); }, {"train_y.bin", "label 0 at offset 1", "1..10"});
  write_file(dir / "train_y.bin", std::string{1, 2});
  expect_error([&] { load_stl10(dir.path.string(), "train"); }, {"train_y.bin", "has 2 labels, expected 3"});
  write_file(dir / "train_X.bin", x.substr(0, rec + 5));
  expect_error([&] { load_stl10(dir.path.string(), "train"); },
               {"train_X.bin", "27653 bytes", "27648-byte STL-10 images", "offset 27648 has 5 bytes"});
  expect_error([&] { load_stl10(dir.path.string(), "test"); }, {"file not found", "test_X.bin"});
}

// ---------------------------------------------------------------- decoded images

namespace {

std::vector<uint8_t> test_image(int h, int w, int c, int seed) {
  std::vector<uint8_t> p(static_cast<size_t>(h) * w * c);
  for (size_t k = 0; k < p.size(); ++k) p[k] = static_cast<uint8_t>(k * 7 + seed * 40);
  return p;
}

void write_png(const std::string& path, int h, int w, int c, int seed) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<uint8_t> p = test_image(h, w, c, seed);
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, c, p.data(), w * c));
}

}  // namespace

TEST(DataReaders, ImageFolderPngAndJpeg) {
  TempDir dir;
  write_png(dir / "cats/b.png", 6, 5, 3, 1);
  write_png(dir / "cats/a.png", 6, 5, 3, 0);
  write_png(dir / "dogs/x.png", 6, 5, 3, 2);
  {
    std::vector<uint8_t> p = test_image(6, 5, 3, 3);
    ASSERT_TRUE(stbi_write_jpg((dir / "dogs/y.JPG").c_str(), 5, 6, 3, p.data(), 95));
  }
  write_file(dir / "dogs/notes.txt", "not an image");
  write_file(dir / ".hidden/z.png", "litter");
  ImageSet s = load_image_folder(dir.path.string());
  ASSERT_EQ(s.images.shape(), (Shape{4, 6, 5, 3}));
  EXPECT_EQ(s.class_names, (std::vector<std::string>{"cats", "dogs"}));
  EXPECT_EQ(s.labels.to_vector(), (std::vector<double>{0, 0, 1, 1}));
  std::vector<uint8_t> a = test_image(6, 5, 3, 0), x = test_image(6, 5, 3, 2);
  EXPECT_EQ(std::vector<uint8_t>(s.images.data<uint8_t>(), s.images.data<uint8_t>() + a.size()), a) << "sorted: a.png first";
  EXPECT_EQ(std::vector<uint8_t>(s.images.data<uint8_t>() + 2 * a.size(), s.images.data<uint8_t>() + 3 * a.size()), x);

  ImageSet grey = load_image_folder(dir.path.string(), {0, 0, 1});
  EXPECT_EQ(grey.images.shape(), (Shape{4, 6, 5, 1}));
  ImageSet small = load_image_folder(dir.path.string(), {3, 4, 3});
  EXPECT_EQ(small.images.shape(), (Shape{4, 3, 4, 3}));

  write_png(dir / "dogs/z_big.png", 8, 8, 3, 4);
  expect_error([&] { load_image_folder(dir.path.string()); },
               {"z_big.png", "image is 8 x 8 (height x width), expected 6 x 5 like", "a.png", "resize on load"});
  EXPECT_EQ(load_image_folder(dir.path.string(), {6, 5, 3}).size(), 5);
  write_file(dir / "dogs/z_big.png", "\x89PNG garbage");
  expect_error([&] { load_image_folder(dir.path.string(), {6, 5, 3}); }, {"z_big.png", "cannot decode image"});
  fs::remove(dir / "dogs/z_big.png");
  fs::create_directories(dir / "empty");
  expect_error([&] { load_image_folder(dir.path.string()); }, {"empty", "no image files"});
  expect_error([&] { load_image_folder(dir / "nowhere"); }, {"folder not found", "nowhere"});
  expect_error([&] { load_image_folder(dir.path.string(), {0, 0, 4}); }, {"channels is 4"});
  expect_error([&] { load_image_folder(dir.path.string(), {5, 0, 3}); }, {"both 0", "both positive"});
}

TEST(DataReaders, PairList) {
  TempDir dir;
  write_png(dir / "img/a.png", 4, 4, 3, 0);
  write_png(dir / "img/b.png", 4, 4, 3, 1);
  write_png(dir / "img/c.png", 4, 4, 3, 2);
  std::string abs_c = (dir.path / "img/c.png").string();
  write_file(dir / "pairs.csv", "# curated\nimg/a.png, img/b.png\n\n" + abs_c + ",img/a.png\r\n\"img/b.png\",img/c.png\n");
  PairList list = load_pair_list(dir / "pairs.csv");
  EXPECT_EQ(list.images.size(), 3) << "each image decoded once";
  ASSERT_EQ(list.pairs.size(), 3u);
  EXPECT_EQ(list.pairs[0], (std::array<int64_t, 2>{0, 1}));
  EXPECT_EQ(list.pairs[1], (std::array<int64_t, 2>{2, 0}));
  EXPECT_EQ(list.pairs[2], (std::array<int64_t, 2>{1, 2}));
  EXPECT_EQ(list.images.labels.to_vector(), (std::vector<double>{-1, -1, -1}));
  std::vector<uint8_t> c = test_image(4, 4, 3, 2);
  EXPECT_EQ(std::vector<uint8_t>(list.images.images.data<uint8_t>() + 2 * c.size(), list.images.images.data<uint8_t>() + 3 * c.size()), c);

  write_file(dir / "bad.csv", "img/a.png,img/b.png\nimg/a.png,img/missing.png\n");
  expect_error([&] { load_pair_list(dir / "bad.csv"); }, {"bad.csv:2:", "image 'img/missing.png' not found", "img/missing.png"});
  write_file(dir / "bad.csv", "img/a.png;img/b.png\n");
  expect_error([&] { load_pair_list(dir / "bad.csv"); }, {"bad.csv:1:", "expected two image paths", "found 1 field"});
  write_file(dir / "bad.csv", "img/a.png,./img/a.png\n");
  expect_error([&] { load_pair_list(dir / "bad.csv"); }, {"bad.csv:1:", "same image"});
  write_file(dir / "img/junk.png", "junk");
  write_file(dir / "bad.csv", "img/a.png,img/b.png\nimg/a.png,img/junk.png\n");
  expect_error([&] { load_pair_list(dir / "bad.csv"); }, {"bad.csv:2:", "junk.png", "cannot decode image"});
  write_file(dir / "bad.csv", "# nothing\n");
  expect_error([&] { load_pair_list(dir / "bad.csv"); }, {"bad.csv", "no pairs"});
  expect_error([&] { load_pair_list(dir / "none.csv"); }, {"file not found", "none.csv"});
}

TEST(DataReaders, VideoFolders) {
  TempDir dir;
  for (int f = 0; f < 5; ++f) write_png(dir / ("walk/f" + std::to_string(f) + ".png"), 4, 6, 3, f);
  for (int f = 0; f < 3; ++f) write_png(dir / ("car/f" + std::to_string(f) + ".png"), 4, 6, 3, 10 + f);
  VideoSet v = load_video_folders(dir.path.string());
  EXPECT_EQ(v.num_videos(), 2);
  EXPECT_EQ(v.start, (std::vector<int64_t>{0, 3, 8}));
  EXPECT_EQ(v.frames.class_names, (std::vector<std::string>{"car", "walk"}));
  EXPECT_EQ(v.frames.labels.to_vector(), (std::vector<double>{0, 0, 0, 1, 1, 1, 1, 1}));
  std::vector<uint8_t> f2 = test_image(4, 6, 3, 2);
  EXPECT_EQ(std::vector<uint8_t>(v.frames.images.data<uint8_t>() + 5 * f2.size(), v.frames.images.data<uint8_t>() + 6 * f2.size()), f2);
}
