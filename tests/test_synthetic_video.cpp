// Synthetic videos (data/synthetic_video.h): the frame renderer against hand-computed
// transformations, and the written clips read back by the video reader as temporal pairs use
// them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "data/synthetic_video.h"

using namespace siam;
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> dot(int h, int w, int y, int x, uint8_t v = 200) {
  std::vector<uint8_t> im(static_cast<size_t>(h * w), 0);
  im[static_cast<size_t>(y * w + x)] = v;
  return im;
}

}  // namespace

TEST(SyntheticVideo, FrameRendererMovesTurnsScalesAndLights) {
  const int h = 9, w = 9;
  std::vector<uint8_t> out(static_cast<size_t>(h * w));
  std::vector<uint8_t> im = dot(h, w, 4, 6);  // two pixels right of the centre (4, 4)
  data::render_frame(im.data(), h, w, 1, 0, 0, 0, 1, 1, out.data());
  EXPECT_EQ(out, im) << "no motion: the image itself";
  data::render_frame(im.data(), h, w, 1, -2, 1, 0, 1, 1, out.data());
  EXPECT_EQ(out, dot(h, w, 5, 4)) << "shifted 2 left, 1 down";
  data::render_frame(im.data(), h, w, 1, 0, 0, 90, 1, 1, out.data());
  EXPECT_EQ(out, dot(h, w, 6, 4)) << "a quarter turn (clockwise on screen, y pointing down)";
  data::render_frame(im.data(), h, w, 1, 0, 0, 0, 2, 1, out.data());
  EXPECT_EQ(out[static_cast<size_t>(4 * w + 8)], 200) << "twice the size: 4 pixels from the centre";
  data::render_frame(im.data(), h, w, 1, 0, 0, 0, 1, 0.5, out.data());
  EXPECT_EQ(out[static_cast<size_t>(4 * w + 6)], 100) << "half the light";
}

TEST(SyntheticVideo, ClipsReadBackAsVideos) {
  const fs::path dir = fs::temp_directory_path() / ("siam_videos_" + std::to_string(getpid()));
  fs::remove_all(dir);
  data::ImageSet src;
  src.name = "two";
  src.images = zeros({2, 12, 12, 1}, {DType::u8});
  for (int i = 0; i < 2; ++i)
    for (int y = 3; y < 9; ++y) src.images.data<uint8_t>()[(i * 12 + y) * 12 + 4 + i] = 180;
  data::VideoSynthesis s;
  s.clips = 3;
  s.frames = 5;
  EXPECT_EQ(data::write_synthetic_videos(src, dir.string(), s), 15);
  const data::VideoSet v = data::load_video_folders(dir.string(), {.height = 0, .width = 0, .channels = 1});
  ASSERT_EQ(v.num_videos(), 3);
  EXPECT_EQ(v.start, (std::vector<int64_t>{0, 5, 10, 15}));
  EXPECT_EQ(v.frames.images.size(1), 12);
  // Frames of one clip change smoothly: neighbours differ less than the first and last.
  auto diff = [&](int64_t a, int64_t b) {
    const uint8_t* p = v.frames.images.data<uint8_t>();
    double d = 0;
    for (int k = 0; k < 144; ++k) d += std::abs(p[a * 144 + k] - p[b * 144 + k]);
    return d;
  };
  EXPECT_LT(diff(0, 1), diff(0, 4));
  data::VideoSynthesis bad = s;
  bad.frames = 1;
  EXPECT_THROW(data::write_synthetic_videos(src, dir.string(), bad), Error);
  fs::remove_all(dir);
}
