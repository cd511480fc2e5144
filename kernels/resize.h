#pragma once
// Bilinear and bicubic resizing of NCHW tensors (no autograd), as PyTorch's F.interpolate with
// an output size: align_corners maps the corner pixels' centres onto each other, otherwise the
// pixel areas line up. Bicubic uses A = -0.75 and clamps taps to the border. f32 and f64 on the CPU.
#include "tensor/tensor.h"

namespace siam::kernels {

enum class Resize { bilinear, bicubic };

// x: (N, C, H, W) -> y: (N, C, out_h, out_w)
Tensor resize(Resize mode, const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners);
// gy: (N, C, out_h, out_w) -> dx: x_shape
Tensor resize_backward(Resize mode, const Tensor& gy, const Shape& x_shape, bool align_corners);

}  // namespace siam::kernels
