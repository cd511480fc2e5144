#pragma once
// A PNG contact sheet of a generator's views, so a user can see what the model will be fed.
#include <cstdint>
#include <string>

#include "data/datasets.h"
#include "data/pairs.h"

namespace siam::data {

// Where a sheet puts things (pixels). Every image is enlarged `scale` times by nearest
// neighbour, so that a cell (as large as the largest view or source image) is at least
// kPreviewMinCell pixels on its shorter side.
constexpr int kPreviewMinCell = 96;
struct PreviewLayout {
  int scale = 1;
  int cell_w = 0, cell_h = 0;  // after scaling
  int gap = 6;                 // between cells; a view's coloured frame sits in it
  int text_scale = 2;          // the label font's pixel size
  int title_h = 0;             // the title line and the column headers
  int label_h = 0;             // each row's label line, above its cells
  int cols = 0, rows = 0;
  int width = 0, height = 0;
  int cell_x(int col) const { return gap + col * (cell_w + gap); }
  int cell_y(int row) const { return title_h + row * (label_h + cell_h + gap) + label_h; }
};
PreviewLayout preview_layout(const PairGenerator& gen, int64_t rows);

// Writes `rows` rows of `epoch` (in the epoch's order) to a PNG at `path`. Per row: the
// source image of the even views (A) and of the odd views (B), each with the crop box of
// every view taken from it drawn in that view's colour, then every view framed in its colour,
// un-normalised (rendered from its own parameters with mean 0 and std 1). Above each row a
// label: the pair's kind, the IoU of the two boxes (views of one image), the frames apart
// (temporal pairs), the neighbour's similarity (mined pairs) and the class names where the
// set has labels. Smaller images sit in the cell's top-left corner. Grey sets are drawn as
// RGB. images: the set `gen` was built on.
void write_preview(const std::string& path, const ImageSet& images, const PairGenerator& gen, int64_t epoch,
                   int64_t rows);

}  // namespace siam::data
