// Mutation fuzzing of the IDX and CIFAR parsers: valid small files, mutated by a seeded loop
// (flipped bytes, truncation, extension, rewritten header fields and labels). Every outcome
// must be a parsed set or a siam::Error; anything else (a crash, another exception, an
// AddressSanitizer report under `make test-asan`) fails.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/datasets.h"

using namespace siam;
using namespace siam::data;
namespace fs = std::filesystem;

namespace {

std::string idx_file(const std::vector<uint32_t>& dims, size_t data_bytes, uint8_t fill) {
  std::string s = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int k = 3; k >= 0; --k) s.push_back(static_cast<char>((d >> (8 * k)) & 0xff));
  for (size_t i = 0; i < data_bytes; ++i) s.push_back(static_cast<char>(fill + i * 7));
  return s;
}

std::string cifar_file(int records, int label_bytes) {
  std::string s;
  for (int r = 0; r < records; ++r) {
    for (int b = 0; b < label_bytes; ++b) s.push_back(static_cast<char>(r % 10));
    for (int k = 0; k < 3072; ++k) s.push_back(static_cast<char>(r + k));
  }
  return s;
}

// One random mutation of `s`. `header` is the size of the part worth aiming at.
std::string mutate(std::string s, std::mt19937_64& rng, size_t header) {
  auto below = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  switch (rng() % 6) {
    case 0:  // flip bits of a few bytes anywhere
      for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n && !s.empty(); ++k)
        s[below(s.size())] ^= static_cast<char>(1 + rng() % 255);
      break;
    case 1:  // truncate
      s.resize(below(s.size() + 1));
      break;
    case 2:  // extend with random bytes
      for (size_t k = 0, n = 1 + below(64); k < n; ++k) s.push_back(static_cast<char>(rng()));
      break;
    case 3:  // rewrite a header byte
      if (!s.empty()) s[below(std::min(header, s.size()))] = static_cast<char>(rng());
      break;
    case 4:  // rewrite a whole 32-bit header field with an extreme or random value
      if (s.size() >= 4) {
        size_t at = 4 * below(std::max<size_t>(1, std::min(header, s.size()) / 4));
        const uint32_t extremes[] = {0, 1, 0x7fffffffu, 0x80000000u, 0xffffffffu, static_cast<uint32_t>(rng())};
        uint32_t v = extremes[rng() % 6];
        for (int k = 0; k < 4 && at + k < s.size(); ++k) s[at + k] = static_cast<char>(v >> (24 - 8 * k));
      }
      break;
    default:  // cut or duplicate a slice in the middle
      if (s.size() > 2) {
        size_t a = below(s.size()), n = below(s.size() - a);
        if (rng() & 1) s.erase(a, n);
        else s.insert(a, s.substr(a, n));
      }
      break;
  }
  return s;
}

template <class F>
void fuzz(const char* what, const std::vector<std::string>& seeds, size_t header, int iterations, uint64_t seed, F parse) {
  std::mt19937_64 rng(seed);
  int ok = 0, errors = 0;
  for (int it = 0; it < iterations; ++it) {
    std::string bytes = seeds[it % seeds.size()];
    for (int m = 0, n = 1 + static_cast<int>(rng() % 3); m < n; ++m) bytes = mutate(std::move(bytes), rng, header);
    try {
      parse(bytes);
      ++ok;
    } catch (const Error&) {
      ++errors;
    } catch (const std::exception& e) {
      FAIL() << what << " iteration " << it << ": not a siam::Error: " << e.what();
    }
  }
  // Both outcomes must occur, or the mutations are not reaching the interesting paths.
  EXPECT_GT(ok, 0) << what;
  EXPECT_GT(errors, iterations / 4) << what;
}

}  // namespace

TEST(DataFuzz, IdxParser) {
  auto start = std::chrono::steady_clock::now();
  std::vector<std::string> images = {idx_file({3, 4, 5}, 60, 1), idx_file({0, 2, 2}, 0, 0), idx_file({1, 1, 1}, 1, 9)};
  std::vector<std::string> labels = {idx_file({6}, 6, 0), idx_file({1}, 1, 3)};
  fuzz("idx images", images, 16, 6000, 1, [](const std::string& b) {
    Tensor t = parse_idx(b, "fuzz", 3);
    ASSERT_EQ(t.numel() + 16, static_cast<int64_t>(b.size()));
  });
  fuzz("idx labels", labels, 8, 3000, 2, [](const std::string& b) { parse_idx(b, "fuzz", 1); });
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

TEST(DataFuzz, CifarParser) {
  auto start = std::chrono::steady_clock::now();
  fuzz("cifar10", {cifar_file(2, 1), cifar_file(1, 1)}, 8, 3000, 3,
       [](const std::string& b) { parse_cifar(b, "fuzz", CifarKind::cifar10); });
  fuzz("cifar100", {cifar_file(2, 2)}, 8, 2000, 4,
       [](const std::string& b) { parse_cifar(b, "fuzz", CifarKind::cifar100_fine); });
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

// The same through files, compressed: mutations of the gzip stream hit zlib's error paths.
TEST(DataFuzz, GzipIdxFiles) {
  fs::path dir = fs::temp_directory_path() / ("siam_data_fuzz_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string img = idx_file({3, 4, 5}, 60, 1), lab = idx_file({3}, 3, 0);
  std::string gz_img;
  {
    std::string p = (dir / "seed.gz").string();
    gzFile f = gzopen(p.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    gzwrite(f, img.data(), static_cast<unsigned>(img.size()));
    gzclose(f);
    std::ifstream in(p, std::ios::binary);
    gz_img.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::ofstream(dir / "lab", std::ios::binary) << lab;
  const std::string img_path = (dir / "img.gz").string(), lab_path = (dir / "lab").string();
  fuzz("gzip idx", {gz_img}, 10, 300, 5, [&](const std::string& b) {
    std::ofstream(img_path, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
    load_idx(img_path, lab_path, "fuzz");
  });
  fs::remove_all(dir);
}
