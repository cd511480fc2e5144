#include "data/preview.h"

#include <stb/stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace siam::data {

void write_preview(const std::string& path, const ImageSet& images, const PairGenerator& gen, int64_t epoch,
                   int64_t rows) {
  if (rows <= 0) fail("write_preview: rows ", rows, ", expected > 0");
  if (images.size() != gen.num_images() || images.height() != gen.image_height() ||
      images.width() != gen.image_width())
    fail("write_preview: '", images.name, "' is not the set the pair generator was built on");
  rows = std::min(rows, gen.rows_per_epoch());
  std::vector<int64_t> order = gen.epoch_order(epoch);
  BatchPlan plan = gen.plan(epoch, order.data(), rows);
  const int V = gen.num_views(), C = static_cast<int>(images.channels());
  const int H = static_cast<int>(images.height()), W = static_cast<int>(images.width());
  int cell_h = H, cell_w = W;
  for (const AugmentConfig& v : gen.config().views) {
    cell_h = std::max(cell_h, v.out_h);
    cell_w = std::max(cell_w, v.out_w);
  }
  constexpr int kGap = 2;
  const int cols = 2 + V;
  const int sheet_w = cols * cell_w + (cols + 1) * kGap, sheet_h = static_cast<int>(rows) * cell_h + (static_cast<int>(rows) + 1) * kGap;
  std::vector<uint8_t> sheet(static_cast<size_t>(sheet_w) * sheet_h * 3, 96);
  std::vector<float> buf;
  const uint8_t* pixels = images.images.data<uint8_t>();
  auto paste = [&](int64_t image, AugmentParams p, int row, int col) {
    for (int c = 0; c < 3; ++c) {
      p.mean[c] = 0.0f;
      p.std[c] = 1.0f;
    }
    buf.resize(static_cast<size_t>(C) * p.out_h * p.out_w);
    augment_cpu(pixels + image * H * W * C, C, p, buf.data());
    const int plane = p.out_h * p.out_w;
    const int y0 = kGap + row * (cell_h + kGap), x0 = kGap + col * (cell_w + kGap);
    for (int y = 0; y < p.out_h; ++y)
      for (int x = 0; x < p.out_w; ++x)
        for (int c = 0; c < 3; ++c) {
          float v = buf[(C == 3 ? c : 0) * plane + y * p.out_w + x];
          sheet[(static_cast<size_t>(y0 + y) * sheet_w + x0 + x) * 3 + c] =
              static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f));
        }
  };
  for (int r = 0; r < static_cast<int>(rows); ++r) {
    for (int k = 0; k < 2; ++k) paste(plan.views[k][r].image, identity_params(H, W, H, W), r, k);
    for (int v = 0; v < V; ++v) paste(plan.views[v][r].image, plan.views[v][r].params, r, 2 + v);
  }
  if (!stbi_write_png(path.c_str(), sheet_w, sheet_h, 3, sheet.data(), sheet_w * 3))
    fail("write_preview: cannot write ", path);
}

}  // namespace siam::data
