"""matmul, linear, convolution, pooling and resizing. C++ twins: tests/ops_linalg.cpp."""
import torch
import torch.nn.functional as F

from gen_ops import Case, distinct, randn


def conv(**kw):
    return lambda x, w, b=None: F.conv2d(x, w, b, **kw)


def resize(mode, h, w, align_corners):
    return lambda x: F.interpolate(x, size=(h, w), mode=mode, align_corners=align_corners)


CASES = [
    # matmul: every PyTorch rank combination, broadcast batch dims, strided operands
    Case("matmul_2d", [randn(3, 4), randn(4, 5)], torch.matmul),
    Case("matmul_1d_2d", [randn(4), randn(4, 3)], torch.matmul),
    Case("matmul_2d_1d", [randn(3, 4), randn(4)], torch.matmul),
    Case("matmul_1d_1d", [randn(5), randn(5)], torch.matmul),
    Case("matmul_batched", [randn(2, 3, 4), randn(2, 4, 5)], torch.matmul),
    Case("matmul_broadcast_batch", [randn(2, 1, 3, 4), randn(3, 4, 5)], torch.matmul),
    Case("matmul_3d_2d", [randn(2, 3, 4), randn(4, 5)], torch.matmul),
    Case("matmul_2d_3d", [randn(3, 4), randn(2, 4, 5)], torch.matmul),
    Case("matmul_1d_3d", [randn(4), randn(2, 4, 5)], torch.matmul),
    Case("matmul_3d_1d", [randn(2, 3, 4), randn(4)], torch.matmul),
    Case("matmul_transposed", [randn(4, 3), randn(5, 4)], lambda a, b: a.t() @ b.t()),
    Case("matmul_batched_transposed", [randn(2, 4, 3), randn(2, 5, 4)],
         lambda a, b: a.transpose(1, 2) @ b.transpose(1, 2)),
    Case("matmul_permuted_3d_2d", [randn(3, 2, 4), randn(4, 5)], lambda a, b: a.permute(1, 0, 2) @ b),
    # linear
    Case("linear_bias", [randn(3, 4), randn(5, 4), randn(5)], F.linear),
    Case("linear_nobias", [randn(3, 4), randn(5, 4)], F.linear),
    Case("linear_3d", [randn(2, 3, 4), randn(5, 4), randn(5)], F.linear),
    Case("linear_1d", [randn(4), randn(5, 4), randn(5)], F.linear),
    # conv2d
    Case("conv2d_plain", [randn(2, 3, 6, 6), randn(4, 3, 3, 3), randn(4)], conv()),
    Case("conv2d_stride2_pad", [randn(2, 3, 7, 7), randn(4, 3, 3, 3), randn(4)], conv(stride=2, padding=1)),
    Case("conv2d_dilation2", [randn(1, 2, 8, 8), randn(3, 2, 3, 3), randn(3)], conv(padding=1, dilation=2)),
    Case("conv2d_groups2", [randn(2, 4, 5, 5), randn(6, 2, 3, 3), randn(6)], conv(padding=1, groups=2)),
    Case("conv2d_depthwise", [randn(2, 3, 6, 6), randn(3, 1, 3, 3), randn(3)],
         conv(stride=2, padding=1, groups=3)),
    Case("conv2d_nobias", [randn(2, 3, 5, 5), randn(4, 3, 3, 3)], conv(padding=1)),
    Case("conv2d_1x1", [randn(2, 4, 5, 5), randn(3, 4, 1, 1), randn(3)], conv()),
    Case("conv2d_1x1_stride2", [randn(2, 4, 5, 5), randn(3, 4, 1, 1), randn(3)], conv(stride=2)),
    Case("conv2d_rect", [randn(1, 2, 7, 6), randn(3, 2, 3, 2), randn(3)],
         conv(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    # pooling (max pooling inputs are distinct, so no window has a tie)
    Case("max_pool2d_k3s2p1", [distinct(2, 3, 7, 7)], lambda x: F.max_pool2d(x, 3, 2, 1)),
    Case("max_pool2d_k2", [distinct(2, 2, 6, 6)], lambda x: F.max_pool2d(x, 2, 2)),
    Case("max_pool2d_overlap", [distinct(1, 2, 5, 5)], lambda x: F.max_pool2d(x, 3, 1)),
    Case("avg_pool2d_k3s2p1", [randn(2, 3, 7, 7)], lambda x: F.avg_pool2d(x, 3, 2, 1)),
    Case("avg_pool2d_k2", [randn(2, 2, 6, 6)], lambda x: F.avg_pool2d(x, 2, 2)),
    Case("adaptive_avg_pool2d_5x7_3x2", [randn(2, 3, 5, 7)], lambda x: F.adaptive_avg_pool2d(x, (3, 2))),
    Case("adaptive_avg_pool2d_1x1", [randn(2, 3, 5, 4)], lambda x: F.adaptive_avg_pool2d(x, 1)),
    Case("adaptive_avg_pool2d_up", [randn(1, 2, 3, 2)], lambda x: F.adaptive_avg_pool2d(x, (5, 4))),
    # resizing
    Case("bilinear_up", [randn(1, 2, 4, 5)], resize("bilinear", 7, 9, False)),
    Case("bilinear_down", [randn(1, 2, 9, 8)], resize("bilinear", 4, 5, False)),
    Case("bilinear_up_align", [randn(1, 2, 4, 5)], resize("bilinear", 7, 9, True)),
    Case("bilinear_down_align", [randn(1, 2, 9, 8)], resize("bilinear", 4, 5, True)),
    Case("bicubic_up", [randn(1, 2, 4, 5)], resize("bicubic", 7, 9, False)),
    Case("bicubic_down", [randn(1, 2, 9, 8)], resize("bicubic", 4, 5, False)),
    Case("bicubic_up_align", [randn(1, 2, 4, 5)], resize("bicubic", 7, 9, True)),
    Case("bicubic_down_align", [randn(1, 2, 9, 8)], resize("bicubic", 4, 5, True)),
]
