#pragma once
// Synthetic videos from still images, for studying temporal positive pairs where no video data
// set can be downloaded: each clip is one image (a garment of Fashion-MNIST) that moves,
// rotates, changes size and illumination smoothly over its frames, on a black canvas of the
// image's size. Written as the folder-of-frames layout load_video_folders reads:
// dir/<clip>/<frame>.png.
#include <cstdint>
#include <string>

#include "data/datasets.h"

namespace siam::data {

struct VideoSynthesis {
  int64_t clips = 1000;     // clips written; clip c shows image c % N of the source
  int64_t frames = 16;      // frames per clip
  double max_shift = 4;     // pixels: the start and end offsets are drawn in [-max_shift, max_shift]
  double max_rotation = 45; // degrees: the total turn over a clip is drawn in [-max_rotation, max_rotation]
  double scale_lo = 0.75, scale_hi = 1.15;  // the start and end sizes are drawn in this range
  double light_lo = 0.5, light_hi = 1.3;    // brightness factors at the start and the end
  uint64_t seed = 0;
};

// Frame t of a clip: the source image (H, W, C) u8 turned, scaled, shifted and lit by the
// clip's parameters at t / (frames - 1), sampled bilinearly. out: H x W x C u8.
void render_frame(const uint8_t* image, int h, int w, int c, double shift_x, double shift_y, double angle_deg,
                  double scale, double light, uint8_t* out);

// Writes the clips of `source` to dir (created; an existing clip folder is overwritten).
// Returns the number of frames written.
int64_t write_synthetic_videos(const ImageSet& source, const std::string& dir, const VideoSynthesis& s);

}  // namespace siam::data
