#!/usr/bin/env python3
"""Loads backbones exported by `siam export` into PyTorch and writes them back.

Usage: check_export.py IN.safetensors OUT.safetensors [IN OUT ...]

For each pair: builds the PyTorch model the file's metadata names (arch, in_channels,
small_input, width, image_size, patch) -- torchvision's ResNet with the classifier replaced by
nn.Identity (a stem of 3x3 stride 1 without max-pool when small_input, `width` channels in the
stem when it is not torchvision's 64), or the timm-named ViT of gen_models.py with its head
replaced by nn.Identity -- loads IN with load_state_dict(strict=True), runs one forward pass in
eval mode to check the feature size, and writes model.state_dict() to OUT with the same
metadata. siam's test (tests/test_eval_export.cpp) loads OUT back and requires every tensor to
be bit-identical to what it exported. Exits non-zero with the reason on any failure.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from gen_models import ViT  # noqa: E402

DEPTHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
          "resnet50": (Bottleneck, [3, 4, 6, 3])}
VIT_SIZES = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}


class WidthResNet(ResNet):
    """torchvision's ResNet with `width` stem channels (doubled per stage) instead of 64."""

    def __init__(self, block, layers, width):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()


def build(meta):
    arch = meta["arch"]
    cin = int(meta["in_channels"])
    if arch in DEPTHS:
        width = int(meta.get("width", "64"))
        if width == 64:
            model = getattr(torchvision.models, arch)()
            model.fc = nn.Identity()
        else:
            model = WidthResNet(*DEPTHS[arch], width)
        if meta["small_input"] == "true":
            model.conv1 = nn.Conv2d(cin, width, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
        elif cin != 3:
            model.conv1 = nn.Conv2d(cin, width, 7, 2, 3, bias=False)
        return model, (2, cin, 32, 32)
    if arch in VIT_SIZES:
        dim, heads = VIT_SIZES[arch]
        image, patch = int(meta["image_size"]), int(meta["patch"])
        model = ViT(image, patch=patch, dim=dim, depth=12, heads=heads)
        model.head = nn.Identity()
        if cin != 3:
            model.patch_embed.proj = nn.Conv2d(cin, dim, patch, patch)
        return model, (2, cin, image, image)
    raise SystemExit(f"check_export.py: unknown arch '{arch}' in the metadata")


def check(src, dst):
    tensors, meta = st.load(src)
    if meta.get("format") != "siam.backbone":
        raise SystemExit(f"check_export.py: {src}: metadata format is {meta.get('format')!r}, expected 'siam.backbone'")
    model, in_shape = build(meta)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(in_shape))
    if tuple(out.shape) != (in_shape[0], int(meta["feature_dim"])):
        raise SystemExit(f"check_export.py: {src}: output {tuple(out.shape)}, expected ({in_shape[0]}, "
                         f"{meta['feature_dim']})")
    st.save(dst, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, meta)
    print(f"check_export.py: {meta['arch']}: {len(tensors)} tensors loaded strictly, features {tuple(out.shape)}")


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    for src, dst in zip(args[::2], args[1::2]):
        check(src, dst)


if __name__ == "__main__":
    main()
