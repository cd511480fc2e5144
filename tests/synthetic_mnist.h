#pragma once
// A small MNIST-format data set written on the fly, so pretraining tests need no download.
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace siam::testdata {

inline std::string idx_file(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string s = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int k = 3; k >= 0; --k) s.push_back(static_cast<char>((d >> (8 * k)) & 0xff));
  return s + std::string(data.begin(), data.end());
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// MNIST-format files of n 28x28 images in 10 classes: class c is a bright bar whose row and
// length depend on c, over seeded noise, so augmented views of one class look alike.
inline void write_synthetic_mnist(const std::string& dir, const std::string& stem, int n, uint32_t seed) {
  std::vector<uint8_t> images(static_cast<size_t>(n) * 28 * 28), labels(n);
  uint32_t s = seed;
  auto next = [&] { return s = s * 1664525u + 1013904223u; };
  for (int i = 0; i < n; ++i) {
    const int c = i % 10;
    labels[i] = static_cast<uint8_t>(c);
    for (int r = 0; r < 28; ++r)
      for (int x = 0; x < 28; ++x) {
        const bool bar = r >= 3 + 2 * c && r < 6 + 2 * c && x >= 4 && x < 8 + 2 * c;
        images[(static_cast<size_t>(i) * 28 + r) * 28 + x] = static_cast<uint8_t>((bar ? 200 : 0) + (next() >> 27));
      }
  }
  write_file(dir + "/" + stem + "-images-idx3-ubyte", idx_file({static_cast<uint32_t>(n), 28, 28}, images));
  write_file(dir + "/" + stem + "-labels-idx1-ubyte", idx_file({static_cast<uint32_t>(n)}, labels));
}

}  // namespace siam::testdata
