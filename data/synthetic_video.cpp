#include "data/synthetic_video.h"

#include <stb/stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <numbers>
#include <sstream>
#include <vector>

#include "tensor/rng.h"

namespace siam::data {

namespace fs = std::filesystem;

void render_frame(const uint8_t* image, int h, int w, int c, double shift_x, double shift_y, double angle_deg,
                  double scale, double light, uint8_t* out) {
  const double a = angle_deg * std::numbers::pi / 180.0, ca = std::cos(a), sa = std::sin(a);
  const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      // Inverse map: output pixel -> source pixel (undo the shift, the turn and the scaling).
      const double dx = (x - cx - shift_x) / scale, dy = (y - cy - shift_y) / scale;
      const double sx = ca * dx + sa * dy + cx, sy = -sa * dx + ca * dy + cy;
      const int x0 = static_cast<int>(std::floor(sx)), y0 = static_cast<int>(std::floor(sy));
      const double fx = sx - x0, fy = sy - y0;
      for (int k = 0; k < c; ++k) {
        auto px = [&](int yy, int xx) -> double {
          return yy < 0 || yy >= h || xx < 0 || xx >= w ? 0.0 : image[(yy * w + xx) * c + k];
        };
        const double v = (1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1)) +
                         fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1));
        out[(y * w + x) * c + k] = static_cast<uint8_t>(std::clamp(std::lround(v * light), 0L, 255L));
      }
    }
}

int64_t write_synthetic_videos(const ImageSet& source, const std::string& dir, const VideoSynthesis& s) {
  if (source.size() == 0) fail("synthetic videos: '", source.name, "' has no images");
  if (s.clips < 1 || s.frames < 2) fail("synthetic videos: need at least 1 clip of 2 frames, got ", s.clips, " of ", s.frames);
  if (!(s.scale_lo > 0 && s.scale_lo <= s.scale_hi) || !(s.light_lo >= 0 && s.light_lo <= s.light_hi))
    fail("synthetic videos: scale and light ranges must be positive and ordered");
  const int h = static_cast<int>(source.height()), w = static_cast<int>(source.width()),
            c = static_cast<int>(source.channels());
  const Tensor images = source.images.is_contiguous() ? source.images : copy_to(source.images, Device::cpu(), DType::u8);
  const int width = static_cast<int>(std::to_string(s.clips - 1).size());
  std::vector<uint8_t> frame(static_cast<size_t>(h * w * c));
  Generator gen(s.seed);
  int64_t written = 0;
  for (int64_t clip = 0; clip < s.clips; ++clip) {
    const Tensor u = rand({8}, gen, {DType::f64});  // this clip's draws, in [0, 1)
    const std::vector<double> r = u.to_vector();
    auto lerp = [](double lo, double hi, double t) { return lo + (hi - lo) * t; };
    const double x0 = lerp(-s.max_shift, s.max_shift, r[0]), x1 = lerp(-s.max_shift, s.max_shift, r[1]);
    const double y0 = lerp(-s.max_shift, s.max_shift, r[2]), y1 = lerp(-s.max_shift, s.max_shift, r[3]);
    const double turn = lerp(-s.max_rotation, s.max_rotation, r[4]);
    const double z0 = lerp(s.scale_lo, s.scale_hi, r[5]), z1 = lerp(s.scale_lo, s.scale_hi, r[6]);
    const double l0 = lerp(s.light_lo, s.light_hi, r[7]), l1 = lerp(s.light_hi, s.light_lo, r[7]);
    std::ostringstream name;
    name << std::setw(width) << std::setfill('0') << clip;
    const fs::path folder = fs::path(dir) / name.str();
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec) fail("synthetic videos: cannot create ", folder.string(), ": ", ec.message());
    const uint8_t* img = images.data<uint8_t>() + (clip % source.size()) * h * w * c;
    for (int64_t t = 0; t < s.frames; ++t) {
      const double f = static_cast<double>(t) / static_cast<double>(s.frames - 1);
      render_frame(img, h, w, c, lerp(x0, x1, f), lerp(y0, y1, f), turn * f, lerp(z0, z1, f), lerp(l0, l1, f),
                   frame.data());
      std::ostringstream file;
      file << std::setw(3) << std::setfill('0') << t << ".png";
      const std::string path = (folder / file.str()).string();
      if (!stbi_write_png(path.c_str(), w, h, c, frame.data(), w * c)) fail("synthetic videos: cannot write ", path);
      ++written;
    }
  }
  return written;
}

}  // namespace siam::data
