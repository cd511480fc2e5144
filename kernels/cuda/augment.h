#pragma once
// CUDA twin of data::augment_batch (data/augment.h): the fused augmentation kernel. The view
// parameters are data::AugmentParams, the plain struct the data layer's sampler fills, so this
// header reaches up to data/augment.h for that struct (and nothing else of data/).
#include <span>

#include "data/augment.h"

namespace siam::gpu {

// cache: (N, H, W, C) u8 on a GPU; see data::augment_batch for the rest. The jobs go to the
// device in one asynchronous copy from pinned memory; the views are made by one launch (one
// block per view), written on siam's stream. Not capturable into a CUDA graph (the jobs come
// from the host): a capture in progress on the stream is refused with an error.
Tensor augment_batch(const Tensor& cache, std::span<const data::AugmentJob> jobs, DType dtype, data::ViewLayout layout);

}  // namespace siam::gpu
