#pragma once
// A PNG contact sheet of a generator's views, so a user can see what the model will be fed.
#include <cstdint>
#include <string>

#include "data/datasets.h"
#include "data/pairs.h"

namespace siam::data {

// Writes `rows` rows of `epoch` (in the epoch's order) to a PNG at `path`: per row, the
// source image of view 0, the source of view 1, then every view, un-normalised (each view is
// rendered from its own parameters with mean 0 and std 1). Cells are as large as the largest
// view; smaller images sit in the cell's top-left corner on grey. Grey sets are drawn as RGB.
// images: the set `gen` was built on.
void write_preview(const std::string& path, const ImageSet& images, const PairGenerator& gen, int64_t epoch,
                   int64_t rows);

}  // namespace siam::data
