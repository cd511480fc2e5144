#include "data/preview.h"

#include <stb/stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "data/text.h"

namespace siam::data {

namespace {

// View colours: view 1 orange, view 2 blue, then the local crops.
constexpr Rgb kViewColor[] = {{255, 140, 0},  {30, 144, 255}, {50, 205, 50},  {220, 20, 60},
                              {186, 85, 211}, {255, 215, 0},  {0, 206, 209},  {255, 105, 180}};
constexpr Rgb kBackground = {40, 40, 40}, kCellGrey = {96, 96, 96}, kText = {235, 235, 235};

Rgb view_color(int v) { return kViewColor[v % static_cast<int>(std::size(kViewColor))]; }

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string class_name(const ImageSet& images, int64_t image) {
  if (!images.labels.defined()) return "";
  const int64_t l = images.labels.data<int64_t>()[image];
  if (l < 0) return "";
  if (l < static_cast<int64_t>(images.class_names.size())) return images.class_names[l];
  return "class " + std::to_string(l);
}

}  // namespace

PreviewLayout preview_layout(const PairGenerator& gen, int64_t rows) {
  PreviewLayout L;
  int cell_h = static_cast<int>(gen.image_height()), cell_w = static_cast<int>(gen.image_width());
  for (const AugmentConfig& v : gen.config().views) {
    cell_h = std::max(cell_h, v.out_h);
    cell_w = std::max(cell_w, v.out_w);
  }
  L.scale = std::max(1, (kPreviewMinCell + std::min(cell_h, cell_w) - 1) / std::min(cell_h, cell_w));
  L.cell_w = cell_w * L.scale;
  L.cell_h = cell_h * L.scale;
  L.cols = 2 + gen.num_views();
  L.rows = static_cast<int>(std::min(rows, gen.rows_per_epoch()));
  L.title_h = 2 * (kTextHeight * L.text_scale + 2 * L.gap);
  L.label_h = kTextHeight * L.text_scale + L.gap;
  L.width = L.cols * L.cell_w + (L.cols + 1) * L.gap;
  L.height = L.title_h + L.rows * (L.label_h + L.cell_h + L.gap);
  return L;
}

void write_preview(const std::string& path, const ImageSet& images, const PairGenerator& gen, int64_t epoch,
                   int64_t rows) {
  if (rows <= 0) fail("write_preview: rows ", rows, ", expected > 0");
  if (images.size() != gen.num_images() || images.height() != gen.image_height() ||
      images.width() != gen.image_width())
    fail("write_preview: '", images.name, "' is not the set the pair generator was built on");
  const PreviewLayout L = preview_layout(gen, rows);
  std::vector<int64_t> order = gen.epoch_order(epoch);
  BatchPlan plan = gen.plan(epoch, order.data(), L.rows);
  const int V = gen.num_views(), C = static_cast<int>(images.channels());
  const int H = static_cast<int>(images.height()), W = static_cast<int>(images.width());
  const int s = L.scale;
  Canvas sheet(L.width, L.height, kBackground);

  // Title and column headers.
  const std::string kind = pair_kind_name(gen.config().kind);
  // Text shrinks (down to 1-pixel strokes) until it fits its space.
  auto fit = [&](const std::string& text, int space) {
    int ts = L.text_scale;
    while (ts > 1 && text_width(text, ts) > space) --ts;
    return ts;
  };
  const OverlapConstraint& o = gen.config().overlap;
  const std::string overlap = o.kind == OverlapConstraint::Kind::zero       ? " with IoU = 0"
                              : o.kind == OverlapConstraint::Kind::interval ? " with IoU in [" + fixed(o.lo, 2) + ", " + fixed(o.hi, 2) + "]"
                                                                            : "";
  const std::string title = kind + " pairs" + overlap + (V > 2 ? " (multi-crop, " + std::to_string(V) + " views)" : "") +
                            ", epoch " + std::to_string(epoch) + ", " + images.name;
  draw_text(sheet, L.gap, L.gap, title, fit(title, L.width - 2 * L.gap), kText);
  const int header_y = L.gap * 3 + kTextHeight * L.text_scale;
  auto header = [&](int col, const std::string& text, Rgb color) {
    draw_text(sheet, L.cell_x(col), header_y, text, fit(text, L.cell_w), color);
  };
  header(0, "image A", kText);
  header(1, "image B", kText);
  for (int v = 0; v < V; ++v) header(2 + v, "view " + std::to_string(v + 1), view_color(v));

  std::vector<float> buf;
  const uint8_t* pixels = images.images.data<uint8_t>();
  // The image drawn through `p` (un-normalised), enlarged s times, top-left at (x0, y0).
  auto paste = [&](int64_t image, AugmentParams p, int x0, int y0) {
    for (int c = 0; c < 3; ++c) {
      p.mean[c] = 0.0f;
      p.std[c] = 1.0f;
    }
    buf.resize(static_cast<size_t>(C) * p.out_h * p.out_w);
    augment_cpu(pixels + image * H * W * C, C, p, buf.data());
    const int plane = p.out_h * p.out_w;
    for (int y = 0; y < p.out_h * s; ++y)
      for (int x = 0; x < p.out_w * s; ++x) {
        uint8_t rgb[3];
        for (int c = 0; c < 3; ++c) {
          float v = buf[(C == 3 ? c : 0) * plane + (y / s) * p.out_w + x / s];
          rgb[c] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f));
        }
        sheet.set(x0 + x, y0 + y, {rgb[0], rgb[1], rgb[2]});
      }
  };
  const int thick = std::max(1, s / 2);
  for (int r = 0; r < L.rows; ++r) {
    const int y = L.cell_y(r);
    for (int col = 0; col < L.cols; ++col) sheet.fill_rect(L.cell_x(col), y, L.cell_w, L.cell_h, kCellGrey);
    // Sources with the boxes of the views taken from them.
    for (int k = 0; k < 2; ++k) {
      const int64_t image = plan.views[k][r].image;
      paste(image, identity_params(H, W, H, W), L.cell_x(k), y);
      for (int v = 0; v < V; ++v) {
        if (plan.views[v][r].image != image) continue;
        const AugmentParams& p = plan.views[v][r].params;
        sheet.draw_box(L.cell_x(k) + p.left * s, y + p.top * s, p.width * s, p.height * s, thick, view_color(v));
      }
    }
    for (int v = 0; v < V; ++v) {
      const AugmentParams& p = plan.views[v][r].params;
      const int x = L.cell_x(2 + v);
      sheet.draw_box(x - 3, y - 3, p.out_w * s + 6, p.out_h * s + 6, 3, view_color(v));
      paste(plan.views[v][r].image, p, x, y);
    }
    // The row's label.
    const PairGenerator::RowInfo info = gen.row_info(plan, r);
    const int64_t a = plan.views[0][r].image, b = plan.views[1][r].image;
    std::string label = pair_kind_name(info.kind);
    if (a == b) label += ", IoU " + fixed(crop_iou(plan.views[0][r].params, plan.views[1][r].params), 2);
    if (info.time_gap >= 0) label += ", " + std::to_string(info.time_gap) + " frames apart";
    if (!std::isnan(info.similarity)) label += ", similarity " + fixed(info.similarity, 2);
    const std::string ca = class_name(images, a), cb = class_name(images, b);
    // A video set's labels are its clips.
    if (info.kind == PairKind::temporal && images.labels.defined())
      label += ", clip " + std::to_string(images.labels.data<int64_t>()[a]);
    else if (!ca.empty())
      label += ", " + (a == b || ca == cb ? ca : ca + " / " + cb) + (a != b && ca == cb ? " (same class)" : "");
    const int ts = fit(label, L.width - 2 * L.gap);
    draw_text(sheet, L.gap, y - L.label_h + (L.label_h - kTextHeight * ts - L.gap) / 2, label, ts, kText);
  }
  if (!stbi_write_png(path.c_str(), sheet.width, sheet.height, 3, sheet.pixels.data(), sheet.width * 3))
    fail("write_preview: cannot write ", path);
}

}  // namespace siam::data
