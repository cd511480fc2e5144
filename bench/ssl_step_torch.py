#!/usr/bin/env python3
"""The PyTorch twin of `siam bench CONFIG` for SimCLR, BYOL and DINO (configs/bench/*.toml):
one training step built the way siam builds it, timed the same way, printed as one JSON line
with siam bench's fields.

    python3 bench/ssl_step_torch.py --config configs/bench/simclr_resnet50_64px.toml \
        [--mode eager-f32|eager-bf16|compile-bf16] [--steps 30] [--warmup 10] [--set key=value]...
    python3 bench/ssl_step_torch.py --method simclr --arch resnet50 --size 64     # no config file
    /usr/bin/python3 bench/ssl_step_torch.py --config ... --device cpu --batch 4 --steps 10 --warmup 1

What it builds, from the config (siam's defaults fill the keys the file leaves out):
  backbone  torchvision ResNet-18/34/50 (classifier removed; 1-channel or small-input stem as
            siam's), or timm's VisionTransformer (class-token feature, drop-path linear over the
            blocks; a local class of the same structure when timm is not installed)
  SimCLR    both views in one batch -> projector Linear(no bias)-BN-ReLU ... Linear(no bias)-BN
            -> NT-Xent (self-similarity masked); LARS
  BYOL      each view on its own through the online encoder, projector Linear(bias)-BN-ReLU-
            Linear(no bias), the same predictor, and the EMA target; 2 - 2 cos, both directions;
            LARS; target EMA after the step (BN running statistics copied, as siam does)
  DINO      teacher on the global crops, student on every crop (consecutive crops of one size
            in one batch), head Linear-GELU-Linear-GELU-Linear, L2-normalise, weight-normalised
            last layer (g fixed to 1); centred, sharpened cross-entropy over crop pairs; AdamW,
            gradient clipping per parameter; teacher EMA and centre after the step
  LARS      as siam's: d = g + wd w, scaled by eta ||w|| / ||d|| (1 if a norm is 0), heavy-ball
            momentum; biases and norm parameters: no weight decay, no trust ratio
Schedules (learning rate, weight decay, EMA momentum, teacher temperature) are held at their
step-0 values: they are host arithmetic in siam and would only force recompiles here.

Modes: eager-f32 (PyTorch's default TF32 settings unless --tf32), eager-bf16 (torch.autocast
bfloat16, f32 master weights, ResNets channels-last), compile-bf16 (the same under
torch.compile(mode=--compile-mode, default max-autotune, which uses CUDA graphs), falling back
to max-autotune-no-cudagraphs and then to eager, with a message and "compile_used" saying so).
Losses are computed in f32 outside autocast, as siam's precision policy does.

Timing: 4 prebuilt batches of random views on the device (the data path is not timed, as in
siam bench), --warmup untimed steps, then the median of --steps steps, each between two
torch.cuda.synchronize(). Peak memory: torch.cuda.max_memory_allocated over the timed steps.
FLOPs: torch.utils.flop_counter.FlopCounterMode over one eager step when PyTorch has it, else an
analytic count from forward hooks (2 x multiply-adds of every conv, linear and attention
product, x3 where gradients are on); "flop_count" says which. tflops = flops_per_step / time.
"""
import argparse
import copy
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

MODES = ("eager-f32", "eager-bf16", "compile-bf16")

# siam's defaults (apps/run_config.cpp) of the keys this twin reads.
DEFAULTS = {
    "run.device": "auto", "run.precision": "f32", "run.seed": 0, "run.epochs": 100, "run.batch_size": 256,
    "backbone.arch": "resnet18", "backbone.in_channels": 0, "backbone.small_input": False, "backbone.width": 64,
    "backbone.image_size": 0, "backbone.patch": 16, "backbone.drop_path": 0.0,
    "data.dataset": "fashion_mnist", "data.channels": 3, "data.image_size": 0, "data.limit": 0,
    "method.name": "simclr",
    "method.simclr.projector": [2048, 2048, 128], "method.simclr.temperature": 0.1,
    "method.byol.projector": [4096, 256], "method.byol.predictor": [4096, 256], "method.byol.base_momentum": 0.996,
    "method.dino.out_dim": 65536, "method.dino.hidden_dim": 2048, "method.dino.bottleneck_dim": 256,
    "method.dino.n_layers": 3, "method.dino.use_bn": False, "method.dino.norm_last_layer": True,
    "method.dino.student_temp": 0.1, "method.dino.warmup_teacher_temp": 0.04, "method.dino.teacher_temp": 0.07,
    "method.dino.warmup_teacher_temp_epochs": 30, "method.dino.center_momentum": 0.9,
    "method.dino.base_momentum": 0.996, "method.dino.freeze_last_layer_epochs": 1,
    "augment.crop_size": 0,
    "pairs.generator": "auto", "pairs.local_crops": 8, "pairs.local_size": 0,
    "optimizer.name": "auto", "optimizer.base_lr": -1.0, "optimizer.weight_decay": -1.0, "optimizer.momentum": 0.9,
    "optimizer.clip_grad": -1.0, "optimizer.clip_mode": "auto",
}
# Each method's official optimizer, learning rate per 256 images and weight decay (ssl/*.h).
OFFICIAL = {"simclr": ("lars", 0.3, 1e-6), "byol": ("lars", 0.2, 1.5e-6), "dino": ("adamw", 5e-4, 0.04)}
VIT_SIZES = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}


def fail(msg):
    sys.exit(f"ssl_step_torch.py: {msg}")


def note(msg):
    print(f"ssl_step_torch.py: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- config

def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = prefix + k
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def toml_value(text):
    if tomllib is not None:
        try:
            return tomllib.loads("v = " + text)["v"]
        except Exception:
            pass
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip().strip('"')


def load_config(args):
    cfg = dict(DEFAULTS)
    if args.config:
        if tomllib is None:
            fail("reading a TOML config needs Python 3.11 (tomllib) or the tomli package")
        with open(args.config, "rb") as f:
            cfg.update(flatten(tomllib.load(f)))
    else:  # issue #8's bench defaults when no file is given
        cfg.update({"run.batch_size": 256, "run.epochs": 1, "data.dataset": "folder", "data.channels": 3,
                    "data.limit": 1024})
    for s in args.set or []:
        if "=" not in s:
            fail(f"--set expects key=value, got '{s}'")
        k, v = s.split("=", 1)
        cfg[k.strip()] = toml_value(v.strip())
    if args.method:
        cfg["method.name"] = args.method
    if args.arch:
        cfg["backbone.arch"] = args.arch
    if args.patch:
        cfg["backbone.patch"] = args.patch
    if args.size:
        cfg["augment.crop_size"] = args.size
        cfg["data.image_size"] = args.size
    if args.channels:
        cfg["backbone.in_channels"] = args.channels
        cfg["data.channels"] = args.channels
    if args.batch:
        cfg["run.batch_size"] = args.batch
    return resolve(cfg)


def resolve(cfg):
    """siam's resolve_defaults for the keys the step depends on."""
    method = cfg["method.name"]
    if method not in OFFICIAL:
        fail(f"method.name is '{method}'; this twin builds simclr, byol and dino")
    ds = cfg["data.dataset"]
    channels = 1 if ds in ("fashion_mnist", "mnist") else cfg["data.channels"] if ds == "folder" else 3
    side = {"fashion_mnist": 28, "mnist": 28, "cifar10": 32, "cifar100": 32, "stl10": 96}.get(ds, cfg["data.image_size"])
    if not cfg["backbone.in_channels"]:
        cfg["backbone.in_channels"] = channels
    if not cfg["augment.crop_size"]:
        cfg["augment.crop_size"] = side
    crop = int(cfg["augment.crop_size"])
    if crop <= 0:
        fail("the view size is unknown: set augment.crop_size (or data.image_size for a folder)")
    if not cfg["backbone.image_size"]:
        cfg["backbone.image_size"] = crop
    if cfg["pairs.generator"] == "auto":
        cfg["pairs.generator"] = "multicrop" if method == "dino" else "augmentation"
    if not cfg["pairs.local_size"]:
        cfg["pairs.local_size"] = max(1, math.floor(crop * 96.0 / 224.0 + 0.5))
    name, lr, wd = OFFICIAL[method]
    if cfg["optimizer.name"] == "auto":
        cfg["optimizer.name"] = name
    if cfg["optimizer.base_lr"] < 0:
        cfg["optimizer.base_lr"] = lr
    if cfg["optimizer.weight_decay"] < 0:
        cfg["optimizer.weight_decay"] = wd
    if cfg["optimizer.clip_grad"] < 0:
        cfg["optimizer.clip_grad"] = 3.0 if method == "dino" else 0.0
    if cfg["optimizer.clip_mode"] == "auto":
        cfg["optimizer.clip_mode"] = "per_parameter" if method == "dino" else "global"
    # The views: two of crop x crop, or DINO's 2 global crops and the local crops.
    sizes = [crop, crop]
    if method == "dino" and cfg["pairs.generator"] == "multicrop":
        sizes += [int(cfg["pairs.local_size"])] * int(cfg["pairs.local_crops"])
    cfg["_view_sizes"] = sizes
    limit, batch = int(cfg["data.limit"]), int(cfg["run.batch_size"])
    cfg["_total_steps"] = max(1, int(cfg["run.epochs"]) * max(1, (limit or batch) // batch))
    return cfg


# ---------------------------------------------------------------- backbones

class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """timm's Attention: qkv Linear(dim, 3 dim, bias), softmax(q k^T / sqrt(d)) v, proj."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, l, d = x.shape
        q, k, v = self.qkv(x).reshape(n, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(n, l, d))


class Block(nn.Module):
    def __init__(self, dim, heads, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LocalViT(nn.Module):
    """timm's VisionTransformer structure (class token, learned position embedding, pre-norm
    blocks, final norm, class-token feature), for machines without timm. Other input sizes get
    the position embedding's patch grid resized bicubically, as DINO's interpolate_pos_encoding."""

    def __init__(self, dim, heads, patch, image_size, in_channels, drop_path):
        super().__init__()
        self.patch = patch
        self.grid = image_size // patch
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.blocks = nn.Sequential(*[Block(dim, heads, drop_path * i / 11) for i in range(12)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def pos(self, gh, gw):
        if gh == self.grid and gw == self.grid:
            return self.pos_embed
        d = self.pos_embed.shape[-1]
        grid = self.pos_embed[:, 1:].reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], 1)

    def forward(self, x):
        t = self.patch_embed(x)  # (N, dim, gh, gw)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos(gh, gw)
        return self.norm(self.blocks(t))[:, 0]


def make_backbone(cfg, drop_path, dynamic_size):
    """(module, feature_dim, description) of backbone.arch as siam's make_backbone builds it."""
    arch = cfg["backbone.arch"]
    cin = int(cfg["backbone.in_channels"])
    if arch in ("resnet18", "resnet34", "resnet50"):
        import torchvision
        if int(cfg["backbone.width"]) != 64:
            fail("backbone.width other than 64 has no torchvision twin")
        net = getattr(torchvision.models, arch)()
        if cfg["backbone.small_input"]:
            net.conv1 = nn.Conv2d(cin, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif cin != 3:
            net.conv1 = nn.Conv2d(cin, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim, "torchvision"
    if arch in VIT_SIZES:
        dim, heads = VIT_SIZES[arch]
        patch, size = int(cfg["backbone.patch"]), int(cfg["backbone.image_size"])
        if size % patch:
            fail(f"backbone.image_size {size} is not divisible by backbone.patch {patch}")
        try:
            from timm.models.vision_transformer import VisionTransformer
        except ImportError:
            VisionTransformer = None
        if VisionTransformer is not None:
            kw = dict(img_size=size, patch_size=patch, in_chans=cin, num_classes=0, embed_dim=dim, depth=12,
                      num_heads=heads, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=drop_path, global_pool="token")
            if dynamic_size:
                kw["dynamic_img_size"] = True  # interpolates the position embedding for other crop sizes
            try:
                return VisionTransformer(**kw), dim, "timm"
            except TypeError as e:
                if not dynamic_size:
                    raise
                note(f"timm's VisionTransformer has no dynamic_img_size ({e}); using the local ViT class")
        return LocalViT(dim, heads, patch, size, cin, drop_path), dim, "local ViT class (timm not installed)"
    fail(f"backbone.arch '{arch}' has no twin here (resnet18/34/50, vit_tiny/small/base)")


# ---------------------------------------------------------------- heads

def mlp(in_dim, dims, hidden_bias, last_bias, last_bn):
    """ssl/heads.cpp make_mlp: hidden Linear -> BN -> ReLU, last Linear [-> BN]."""
    layers = []
    for i, d in enumerate(dims):
        last = i + 1 == len(dims)
        layers.append(nn.Linear(in_dim, d, bias=last_bias if last else hidden_bias))
        if not last:
            layers += [nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d))
        in_dim = d
    return nn.Sequential(*layers)


class WeightNormLinear(nn.Module):
    """weight = g v / ||v|| row-wise (torch.nn.utils.weight_norm's dim 0), no bias. Frozen: no
    gradient reaches g or v, as siam's frozen last layer."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.in_features, self.out_features = in_dim, out_dim
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.frozen = False

    def forward(self, x):
        g, v = (self.weight_g.detach(), self.weight_v.detach()) if self.frozen else (self.weight_g, self.weight_v)
        return F.linear(x, v * (g / v.norm(dim=1, keepdim=True)))


class DinoHead(nn.Module):
    def __init__(self, in_dim, cfg):
        super().__init__()
        p = "method.dino."
        hidden, bottleneck, n = int(cfg[p + "hidden_dim"]), int(cfg[p + "bottleneck_dim"]), int(cfg[p + "n_layers"])
        layers, d = [], in_dim
        for _ in range(n - 1):
            layers.append(nn.Linear(d, hidden))
            if cfg[p + "use_bn"]:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.GELU())
            d = hidden
        layers.append(nn.Linear(d, bottleneck))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck, int(cfg[p + "out_dim"]))
        if cfg[p + "norm_last_layer"]:
            self.last_layer.weight_g.requires_grad_(False)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=1))


# ---------------------------------------------------------------- methods

class Method(nn.Module):
    """forward(views) -> the loss, under autocast when bf16; after_step() updates targets."""

    def __init__(self, cfg, device_type, bf16):
        super().__init__()
        self.device_type, self.bf16 = device_type, bf16

    def autocast(self):
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def f32(self):  # losses in f32, outside autocast (siam's precision policy)
        return torch.autocast(device_type=self.device_type, enabled=False)

    def after_step(self):
        pass


class SimCLR(Method):
    def __init__(self, cfg, device_type, bf16):
        super().__init__(cfg, device_type, bf16)
        self.backbone, dim, self.backbone_impl = make_backbone(cfg, float(cfg["backbone.drop_path"]), False)
        self.projector = mlp(dim, cfg["method.simclr.projector"], False, False, True)
        self.temperature = float(cfg["method.simclr.temperature"])

    def forward(self, views):
        with self.autocast():
            z = self.projector(self.backbone(torch.cat(views[:2])))
        with self.f32():
            zn = F.normalize(z.float(), dim=1)
            m = zn.shape[0]
            s = zn @ zn.t() / self.temperature
            s = s.masked_fill(torch.eye(m, dtype=torch.bool, device=s.device), float("-inf"))
            target = (torch.arange(m, device=s.device) + m // 2) % m
            return F.cross_entropy(s, target)


@torch.no_grad()
def ema_(target, online, m):
    """target = m target + (1 - m) online on the parameters; buffers copied (siam's EmaUpdater)."""
    tp, op = list(target.parameters()), list(online.parameters())
    torch._foreach_mul_(tp, m)
    torch._foreach_add_(tp, op, alpha=1 - m)
    tb, ob = list(target.buffers()), list(online.buffers())
    if tb:
        if hasattr(torch, "_foreach_copy_"):
            torch._foreach_copy_(tb, ob)
        else:
            for t, o in zip(tb, ob):
                t.copy_(o)


def make_target(module):
    t = copy.deepcopy(module)
    for p in t.parameters():
        p.requires_grad_(False)
    return t


class BYOL(Method):
    def __init__(self, cfg, device_type, bf16):
        super().__init__(cfg, device_type, bf16)
        self.backbone, dim, self.backbone_impl = make_backbone(cfg, float(cfg["backbone.drop_path"]), False)
        proj, pred = cfg["method.byol.projector"], cfg["method.byol.predictor"]
        self.projector = mlp(dim, proj, True, False, False)
        self.predictor = mlp(proj[-1], pred, True, False, False)
        self.target_backbone, self.target_projector = make_target(self.backbone), make_target(self.projector)
        # tau at step 0 of the cosine (held: see the module docstring)
        self.tau = float(cfg["method.byol.base_momentum"])

    def forward(self, views):
        x1, x2 = views[:2]
        with self.autocast():
            z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
            p1, p2 = self.predictor(z1), self.predictor(z2)
            with torch.no_grad():
                t1 = self.target_projector(self.target_backbone(x1))
                t2 = self.target_projector(self.target_backbone(x2))
        with self.f32():
            def regression(p, z):
                return (2 - 2 * (F.normalize(p.float(), dim=1) * F.normalize(z.float(), dim=1)).sum(1)).mean()
            return regression(p1, t2) + regression(p2, t1)

    def after_step(self):
        ema_(self.target_backbone, self.backbone, self.tau)
        ema_(self.target_projector, self.projector, self.tau)


class DINO(Method):
    def __init__(self, cfg, device_type, bf16):
        super().__init__(cfg, device_type, bf16)
        p = "method.dino."
        sizes = cfg["_view_sizes"]
        dynamic = len(set(sizes)) > 1
        self.backbone, dim, self.backbone_impl = make_backbone(cfg, float(cfg["backbone.drop_path"]), dynamic)
        self.head = DinoHead(dim, cfg)
        self.teacher_backbone = make_backbone(cfg, 0.0, dynamic)[0]  # the teacher: no stochastic depth
        self.teacher_backbone.load_state_dict(self.backbone.state_dict())
        for q in self.teacher_backbone.parameters():
            q.requires_grad_(False)
        self.teacher_head = make_target(self.head)
        self.register_buffer("center", torch.zeros(1, int(cfg[p + "out_dim"])))
        self.register_buffer("batch_center", torch.zeros(1, int(cfg[p + "out_dim"])))
        self.student_temp = float(cfg[p + "student_temp"])
        # epoch 0 of the schedules (held: see the module docstring)
        w = int(cfg[p + "warmup_teacher_temp_epochs"])
        self.teacher_temp = float(cfg[p + "warmup_teacher_temp"] if w > 0 else cfg[p + "teacher_temp"])
        self.head.last_layer.frozen = int(cfg[p + "freeze_last_layer_epochs"]) > 0
        self.momentum, self.center_momentum = float(cfg[p + "base_momentum"]), float(cfg[p + "center_momentum"])
        self.globals = 2

    def forward(self, views):
        with self.autocast():
            with torch.no_grad():
                teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:self.globals])))
            feats, v = [], 0
            while v < len(views):  # consecutive crops of one size go through the backbone together
                end = v + 1
                while end < len(views) and views[end].shape == views[v].shape:
                    end += 1
                feats.append(self.backbone(torch.cat(views[v:end])))
                v = end
            student = self.head(torch.cat(feats))
        with self.f32():
            teacher, student = teacher.float(), student.float()
            crops, b = len(views), views[0].shape[0]
            q = F.softmax((teacher - self.center) / self.teacher_temp, dim=1)
            logp = F.log_softmax(student / self.student_temp, dim=1)
            total, pairs = 0.0, 0
            for t in range(self.globals):
                qt = q[t * b:(t + 1) * b]
                for s in range(crops):
                    if s != t:
                        total = total + (-qt * logp[s * b:(s + 1) * b]).sum(1).mean()
                        pairs += 1
            with torch.no_grad():
                self.batch_center.copy_(teacher.mean(0, keepdim=True))
            return total / pairs

    @torch.no_grad()
    def after_step(self):
        ema_(self.teacher_backbone, self.backbone, self.momentum)
        ema_(self.teacher_head, self.head, self.momentum)
        self.center.mul_(self.center_momentum).add_(self.batch_center, alpha=1 - self.center_momentum)


METHODS = {"simclr": SimCLR, "byol": BYOL, "dino": DINO}


# ---------------------------------------------------------------- optimizers

def param_groups(method):
    """nn::bias_and_norm_groups: parameters with < 2 dimensions get no weight decay (nor LARS
    adaptation)."""
    params = [p for p in method.parameters() if p.requires_grad]
    return [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]


class LARS:
    """siam's LARS (nn/optim.h), vectorised with torch._foreach ops. State in plain lists (no
    dict keyed by tensors), so torch.compile traces step() whole."""

    def __init__(self, weights, no_decay, lr, weight_decay, momentum, eta=1e-3):
        self.groups = [(weights, weight_decay, True), (no_decay, 0.0, False)]
        self.lr, self.momentum, self.eta = lr, momentum, eta
        self.bufs = [[torch.zeros_like(p) for p in ps] for ps, _, _ in self.groups]

    def mark_static(self):  # momentum buffers live across CUDA-graph replays
        mark = getattr(getattr(torch, "_dynamo", None), "mark_static_address", None)
        if mark is not None:
            for bufs in self.bufs:
                for b in bufs:
                    mark(b)

    def zero_grad(self, set_to_none=True):
        for ps, _, _ in self.groups:
            for p in ps:
                p.grad = None

    @torch.no_grad()
    def step(self):
        for (group, wd, adapt), group_bufs in zip(self.groups, self.bufs):
            ps = [p for p in group if p.grad is not None]
            if not ps:
                continue
            bufs = [b for p, b in zip(group, group_bufs) if p.grad is not None]
            gs = [p.grad for p in ps]
            d = torch._foreach_add(gs, ps, alpha=wd) if wd else (torch._foreach_mul(gs, 1.0) if adapt else gs)
            if adapt:
                pn, dn = torch.stack(torch._foreach_norm(ps)), torch.stack(torch._foreach_norm(d))
                q = torch.where((pn > 0) & (dn > 0), self.eta * pn / dn, torch.ones_like(pn))
                torch._foreach_mul_(d, list(q.unbind(0)))
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, d)
            torch._foreach_add_(ps, bufs, alpha=-self.lr)


def make_optimizer(cfg, method, device, compiled):
    weights, no_decay = param_groups(method)
    lr = float(cfg["optimizer.base_lr"]) * int(cfg["run.batch_size"]) / 256
    wd, name = float(cfg["optimizer.weight_decay"]), cfg["optimizer.name"]
    groups = [{"params": weights, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    cuda = device.type == "cuda"
    if name == "lars":
        return LARS(weights, no_decay, lr, wd, float(cfg["optimizer.momentum"])), "LARS (local, foreach)"
    if name == "sgd":
        kw = {"foreach": True} if compiled or not cuda else _fused_kw(torch.optim.SGD)
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg["optimizer.momentum"]), **kw), f"torch.optim.SGD {kw}"
    if name == "adamw":
        kw = ({"foreach": True, "capturable": True} if cuda else {"foreach": True}) if compiled else \
            (_fused_kw(torch.optim.AdamW) if cuda else {"foreach": True})
        return torch.optim.AdamW(groups, lr=lr, **kw), f"torch.optim.AdamW {kw}"
    fail(f"optimizer.name '{name}' is not sgd, lars or adamw")


def _fused_kw(cls):
    import inspect
    return {"fused": True} if "fused" in inspect.signature(cls).parameters else {"foreach": True}


@torch.no_grad()
def clip_(params, max_norm, per_parameter):
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or max_norm <= 0:
        return
    if per_parameter:  # DINO's clip_gradients: each parameter by its own norm
        norms = torch.stack(torch._foreach_norm(grads))
    else:  # clip_grad_norm_: one norm over all gradients
        norms = torch.stack(torch._foreach_norm(grads)).norm().expand(len(grads))
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(coef.unbind(0)))


# ---------------------------------------------------------------- FLOPs

def count_flops(run_step):
    """(flops of one step, how counted). run_step() runs forward + backward once, eagerly."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        FlopCounterMode = None
    if FlopCounterMode is not None:
        try:
            with FlopCounterMode(display=False) as fc:
                run_step()
            return int(fc.get_total_flops()), "FlopCounterMode (matmul, conv and attention FLOPs)"
        except Exception as e:  # noqa: BLE001 -- fall back to the analytic count
            note(f"FlopCounterMode failed ({type(e).__name__}: {e}); counting analytically")
    return None, None


def count_flops_analytic(method, run_step):
    total = [0]

    def hook(mod, inp, out):
        x = inp[0]
        k = 3 if torch.is_grad_enabled() else 1  # forward + input and weight gradients
        if isinstance(mod, nn.Conv2d):
            macs = out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, (nn.Linear, WeightNormLinear)):
            macs = out.numel() * mod.in_features
        else:  # attention: q k^T and (attn) v
            n, l, d = x.shape
            macs = 2 * n * l * l * d
        total[0] += 2 * k * macs

    handles = [m.register_forward_hook(hook) for m in method.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, WeightNormLinear)) or type(m).__name__ == "Attention"]
    try:
        run_step()
    finally:
        for h in handles:
            h.remove()
    return total[0], "analytic (forward hooks: 2 x MACs of conv/linear/attention, x3 with gradients)"


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--config", help="a siam TOML config (configs/bench/*.toml)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, as siam's --set")
    ap.add_argument("--method", choices=sorted(METHODS), help="method.name (without --config: issue #8's bench setup)")
    ap.add_argument("--arch", help="backbone.arch: resnet18, resnet34, resnet50, vit_tiny, vit_small, vit_base")
    ap.add_argument("--patch", type=int, help="backbone.patch (ViT)")
    ap.add_argument("--size", type=int, help="view side: augment.crop_size and data.image_size")
    ap.add_argument("--channels", type=int, help="input channels")
    ap.add_argument("--batch", type=int, help="run.batch_size: images (pairs) per step")
    ap.add_argument("--mode", choices=MODES, default="eager-bf16")
    ap.add_argument("--compile-mode", default="max-autotune",
                    help="torch.compile mode of compile-bf16 (max-autotune uses CUDA graphs)")
    ap.add_argument("--device", help="cuda, cuda:N or cpu (default: run.device; auto = cuda when available)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (>= 1)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps, median reported (>= 10)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--tf32", choices=("default", "on", "off"), default="default",
                    help="TF32 for f32 matmuls/convs (default: PyTorch's defaults)")
    ap.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    args = ap.parse_args()
    if args.steps < 10:
        ap.error("--steps must be at least 10 (the median of 10 or more steps)")
    if args.warmup < 1:
        ap.error("--warmup must be at least 1")
    cfg = load_config(args)

    dev_name = args.device or cfg["run.device"]
    if dev_name == "auto":
        dev_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev_name)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        fail("device cuda but torch.cuda.is_available() is False (use --device cpu for a smoke test)")
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        if not args.no_cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if args.tf32 != "default":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(int(cfg["run.seed"]))

    bf16 = args.mode != "eager-f32"
    method_name = cfg["method.name"]
    method = METHODS[method_name](cfg, device.type, bf16).to(device)
    resnet = cfg["backbone.arch"].startswith("resnet")
    channels_last = bf16 and resnet
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    method.train()

    batch, cin, sizes = int(cfg["run.batch_size"]), int(cfg["backbone.in_channels"]), cfg["_view_sizes"]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = [[torch.randn(batch, cin, s, s, device=device).contiguous(memory_format=fmt) for s in sizes]
               for _ in range(4)]

    requested_compile = args.mode == "compile-bf16"
    optimizer, opt_desc = make_optimizer(cfg, method, device, requested_compile)
    clip, per_param = float(cfg["optimizer.clip_grad"]), cfg["optimizer.clip_mode"] == "per_parameter"
    trainable = [p for p in method.parameters() if p.requires_grad]

    def opt_step():
        if clip > 0:
            clip_(trainable, clip, per_param)
        optimizer.step()

    def fwd_bwd(views):
        loss = method(views)
        loss.backward()
        return loss

    # FLOPs of one eager step (before any compile, before timing).
    flops, flop_how = None, None
    if not args.no_flops:
        optimizer.zero_grad(set_to_none=True)
        flops, flop_how = count_flops(lambda: fwd_bwd(batches[0]))
        if flops is None:
            optimizer.zero_grad(set_to_none=True)
            flops, flop_how = count_flops_analytic(method, lambda: fwd_bwd(batches[0]))
        optimizer.zero_grad(set_to_none=True)

    forward, step_fn, after_fn = method, opt_step, method.after_step
    compile_used = "eager"
    mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

    def one_step(views, fwd, stp, aft, keep_loss=False):
        if mark_step is not None and compile_used.startswith("torch.compile"):
            mark_step()  # a new iteration: CUDA-graph outputs of the last one may be overwritten
        optimizer.zero_grad(set_to_none=True)
        loss = fwd(views)
        kept = loss.detach().clone() if keep_loss else None  # a graph output is reused by the next replay
        loss.backward()
        stp()
        aft()
        return kept

    compile_tries = []
    if requested_compile:
        if not hasattr(torch, "compile"):
            note(f"torch {torch.__version__} has no torch.compile: compile-bf16 runs eagerly")
            compile_used = "eager (torch.compile unavailable)"
        else:
            compile_tries = [args.compile_mode]
            if args.compile_mode == "max-autotune":  # the same without CUDA graphs, if those fail
                compile_tries.append("max-autotune-no-cudagraphs")
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    first_step_s = None
    for mode in compile_tries:
        try:
            if isinstance(optimizer, LARS) and cuda:
                optimizer.mark_static()
            fwd_c = torch.compile(method, mode=mode)
            stp_c = torch.compile(opt_step, mode=mode)
            aft_c = torch.compile(method.after_step, mode=mode)
            compile_used = f"torch.compile(mode={mode})"
            t0 = time.perf_counter()
            for s in range(2):  # compiles (and records the CUDA graphs)
                one_step(batches[s % len(batches)], fwd_c, stp_c, aft_c)
            sync()
            first_step_s = time.perf_counter() - t0
            forward, step_fn, after_fn = fwd_c, stp_c, aft_c
            break
        except Exception as e:  # noqa: BLE001 -- any compile failure falls back
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            note(f"torch.compile(mode={mode}) failed: {type(e).__name__}: {msg[:300]}; falling back")
            compile_used = "eager (compile failed)"
            if hasattr(torch, "_dynamo"):
                torch._dynamo.reset()
    else:
        if compile_tries:
            note("every torch.compile mode failed: compile-bf16 runs eagerly")

    times, kept = [], None
    for s in range(args.warmup + args.steps):
        if s == args.warmup and cuda:
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        t0 = time.perf_counter()
        kept = one_step(batches[s % len(batches)], forward, step_fn, after_fn, keep_loss=s + 1 == args.warmup + args.steps)
        sync()
        dt = (time.perf_counter() - t0) * 1000
        if s >= args.warmup:
            times.append(dt)
    loss_value = float(kept.float().item())

    med = statistics.median(times)
    views = len(sizes)
    out = {
        "bench": "pretrain_step", "impl": "pytorch", "method": method_name, "arch": cfg["backbone.arch"],
        "device": f"cuda:{device.index}" if cuda else "cpu",
        "threads": torch.get_num_threads(), "batch": batch, "views": views, "input": [cin, sizes[0], sizes[0]],
        "view_sizes": sizes, "warmup": args.warmup, "steps": args.steps,
        "ms_per_step": med, "ms_min": min(times), "ms_max": max(times),
        "pairs_per_s": batch * 1000 / med, "views_per_s": views * batch * 1000 / med,
        "data_ms_per_batch": None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(device)
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    out.update({
        "mode": args.mode, "precision": "bf16" if bf16 else "f32", "channels_last": channels_last,
        "compile_used": compile_used, "first_steps_s": first_step_s,
        "flops_per_step": flops, "flop_count": flop_how,
        "tflops": flops / (med / 1000) / 1e12 if flops else None,
        "loss": loss_value, "backbone_impl": method.backbone_impl, "optimizer": opt_desc,
        "config": args.config, "torch_version": torch.__version__,
    })
    if resnet is False and cfg["backbone.arch"] in VIT_SIZES:
        out["patch"] = int(cfg["backbone.patch"])
    if cuda:
        out["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        out["tf32"] = {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32)}
    if compile_used.startswith("torch.compile"):
        try:
            from torch._dynamo.utils import counters
            out["compile_counters"] = {
                "graph_breaks": sum(counters["graph_break"].values()),
                "cudagraph_skips": counters["inductor"].get("cudagraph_skips", 0),
            }
        except Exception:  # noqa: BLE001 -- informative only
            pass
    if not math.isfinite(loss_value):
        note(f"the loss is {loss_value} after the timed steps")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
