"""MIRNet, multi-scale residual network for real image restoration (Zamir et al., ECCV 2020).

``groups`` recursive residual groups (RRG), each ``msrb`` multi-scale residual blocks
(MSRB) and a 3×3 conv with a skip; a 3×3 conv in and out and a global skip
(``clean = noisy + net(noisy)``). One MSRB keeps ``height`` parallel streams at
full, 1/2 and 1/4 resolution (64, 128, 256 features), ``width`` dual attention
units (DAU: conv-PReLU-conv, then channel attention and spatial attention in
parallel, concatenated, fused by 1×1, plus a skip) per stream, exchanges
information between the streams with selective kernel feature fusion (SKFF:
softmax-weighted sum of the resized streams, weights from global pooling) and
residual resizing modules (anti-aliased stride-2 blur-pool down, transposed-conv
or bilinear up, each in a conv branch plus a 1×1 shortcut branch).

As in the official implementation, the DAUs of one stream share their weights
across the ``width`` columns (the official code repeats one module in its list);
that configuration has the published 31.8M parameters. Module and parameter names
follow the official code, with the repeated column index dropped
(``blocks.<stream>.<column>.`` → ``blocks.<stream>.``), so its released state dicts
load after :func:`_from_official` (which also drops the constant blur filters).
Sharing hides ``width`` from a state dict: plain files load with the published
width of 2 unless told otherwise. Sizes must be multiples of ``2**(height-1)``; the
Denoiser wrapper pads.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from rfr_deploy.models.registry import ModelEntry, StateDict, register_model


def _conv(cin: int, cout: int, k: int = 3, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias, stride=stride)


class SKFF(nn.Module):
    """Selective kernel feature fusion of ``height`` same-shaped streams."""

    def __init__(self, features: int, height: int = 3, reduction: int = 8):
        super().__init__()
        hidden = max(features // reduction, 4)
        self.height = height
        self.conv_du = nn.Sequential(nn.Conv2d(features, hidden, 1, bias=False), nn.PReLU())
        self.fcs = nn.ModuleList(nn.Conv2d(hidden, features, 1, bias=False) for _ in range(height))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        # The streams are added one by one rather than stacked into an N × height × C × H × W tensor and
        # reduced over its second dimension: that reduction ran at a fraction of memory speed on
        # channels-last streams (a tenth of a MIRNet pass at 128² on an AVX2 CPU).
        z = self.conv_du(sum(feats[1:], feats[0]).mean(dim=(2, 3), keepdim=True))
        weights = torch.softmax(
            torch.stack([fc(z) for fc in self.fcs], dim=1), dim=1
        )  # N × height × C × 1 × 1
        weighted = [f * weights[:, i] for i, f in enumerate(feats)]
        return sum(weighted[1:], weighted[0])


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.spatial = nn.Sequential()
        self.spatial.add_module("conv", nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class ChannelAttention(nn.Module):
    def __init__(self, features: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, features // reduction)
        self.conv_du = nn.Sequential(
            nn.Conv2d(features, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, features, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class DAU(nn.Module):
    """Dual attention unit."""

    def __init__(self, features: int, reduction: int = 8):
        super().__init__()
        self.body = nn.Sequential(_conv(features, features), nn.PReLU(), _conv(features, features))
        self.SA = SpatialAttention()
        self.CA = ChannelAttention(features, reduction)
        self.conv1x1 = nn.Conv2d(2 * features, features, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        return x + self.conv1x1(torch.cat([self.SA(res), self.CA(res)], dim=1))


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect pad, [1 2 1]ᵀ[1 2 1]/16 blur per channel."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        kernel = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt.to(x.dtype), stride=2, groups=x.shape[1]
        )


class ResidualDownSample(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        f = features
        self.top = nn.Sequential(
            _conv(f, f, 1), nn.PReLU(), _conv(f, f, 3), nn.PReLU(), BlurPool(f), _conv(f, 2 * f, 1)
        )
        self.bot = nn.Sequential(BlurPool(f), _conv(f, 2 * f, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(x) + self.bot(x)


class ResidualUpSample(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        f = features
        self.top = nn.Sequential(
            _conv(f, f, 1),
            nn.PReLU(),
            nn.ConvTranspose2d(f, f, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.PReLU(),
            _conv(f, f // 2, 1),
        )
        self.bot = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _conv(f, f // 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(x) + self.bot(x)


class Resize(nn.Module):
    """``log2(scale)`` residual down- or up-sampling steps (features ×2 or ÷2 per step)."""

    def __init__(self, features: int, scale: int, up: bool):
        super().__init__()
        steps = []
        for _ in range(scale.bit_length() - 1):
            steps.append(ResidualUpSample(features) if up else ResidualDownSample(features))
            features = features // 2 if up else features * 2
        self.body = nn.Sequential(*steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MSRB(nn.Module):
    """Multi-scale residual block: ``height`` streams × ``width`` DAUs, mesh-connected by SKFF."""

    def __init__(self, features: int, height: int, width: int, reduction: int):
        super().__init__()
        self.height, self.width = height, width
        feats = [features * 2**i for i in range(height)]
        # One DAU per stream, applied in every column (shared weights, as in the official code).
        self.blocks = nn.ModuleList(DAU(f, reduction) for f in feats)
        self.last_up = nn.ModuleDict({str(i): Resize(feats[i], 2**i, up=True) for i in range(1, height)})
        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        for i, f in enumerate(feats):
            for d in range(1, height - i):
                self.down[f"{f}_{2**d}"] = Resize(f, 2**d, up=False)
            for d in range(1, i + 1):
                self.up[f"{f}_{2**d}"] = Resize(f, 2**d, up=True)
        self.selective_kernel = nn.ModuleList(SKFF(f, height, reduction) for f in feats)
        self.conv_out = _conv(features, features)

    def _resize(self, x: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        if src == dst:
            return x
        key = f"{x.shape[1]}_{2 ** abs(src - dst)}"
        return self.down[key](x) if dst > src else self.up[key](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = []
        h = x
        for j in range(self.height):
            h = self.blocks[j](h if j == 0 else self.down[f"{h.shape[1]}_2"](h))
            streams.append(h)
        for _ in range(1, self.width):
            fused = [
                self.selective_kernel[j]([self._resize(streams[k], k, j) for k in range(self.height)])
                for j in range(self.height)
            ]
            streams = [self.blocks[j](fused[j]) for j in range(self.height)]
        out = [streams[0]] + [self.last_up[str(k)](streams[k]) for k in range(1, self.height)]
        return x + self.conv_out(self.selective_kernel[0](out))


class RRG(nn.Module):
    """Recursive residual group."""

    def __init__(self, features: int, msrb: int, height: int, width: int, reduction: int):
        super().__init__()
        blocks: list[nn.Module] = [MSRB(features, height, width, reduction) for _ in range(msrb)]
        blocks.append(_conv(features, features))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MIRNet(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        features: int = 64,
        groups: int = 3,
        msrb: int = 2,
        height: int = 3,
        width: int = 2,
        reduction: int = 8,
    ):
        super().__init__()
        if min(features, groups, msrb, width, reduction) < 1:
            raise ValueError("features, groups, msrb, width and reduction must be >= 1")
        if not 1 <= height <= 3:
            raise ValueError("height must be 1, 2 or 3 (the registry pads sizes to multiples of 4)")
        self.conv_in = _conv(channels, features)
        self.body = nn.Sequential(*(RRG(features, msrb, height, width, reduction) for _ in range(groups)))
        self.conv_out = _conv(features, channels)
        nn.init.normal_(self.conv_out.weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_out(self.body(self.conv_in(x)))


_GROUP = re.compile(r"^body\.(\d+)\.")
_MSRB = re.compile(r"^body\.0\.body\.(\d+)\.blocks\.")
_STREAM = re.compile(r"^body\.0\.body\.0\.blocks\.(\d+)\.")
_OFFICIAL_COLUMN = re.compile(r"(\.blocks\.\d+)\.(\d+)\.")


def _from_official(state: StateDict) -> StateDict:
    """Official layout (``blocks.<stream>.<column>``, persistent blur filters) → this module's names."""
    out = {}
    for key, value in state.items():
        if key.endswith(".filt"):
            continue
        m = _OFFICIAL_COLUMN.search(key)
        if m:
            if m.group(2) != "0":
                continue  # the same shared tensors again
            key = key[: m.start()] + m.group(1) + "." + key[m.end() :]
        out[key] = value
    return out


def _infer(state: StateDict) -> dict[str, int]:
    first = state["conv_in.weight"]
    groups = len({int(m.group(1)) for k in state if (m := _GROUP.match(k))})
    msrb = len({int(m.group(1)) for k in state if (m := _MSRB.match(k))})
    streams = {int(m.group(1)) for k in state if (m := _STREAM.match(k))}
    if not (groups and msrb and streams):
        raise KeyError("no 'body.<i>.body.<j>.blocks.<k>' tensors")
    features = int(first.shape[0])
    hidden = int(state["body.0.body.0.blocks.0.CA.conv_du.0.weight"].shape[0])
    return {
        "channels": int(state["conv_out.weight"].shape[0]),
        "_in_channels": int(first.shape[1]),
        "features": features,
        "groups": groups,
        "msrb": msrb,
        "height": 1 + max(streams),
        "reduction": max(1, features // hidden),
    }


register_model(
    ModelEntry(
        name="mirnet",
        build=MIRNet,
        output="direct",
        pad_multiple=4,  # 2 ** (height - 1) for the default height of 3
        global_statistics=True,  # channel attention and selective kernel fusion pool over the image
        description="MIRNet: multi-scale residual blocks with dual attention and selective kernel fusion "
        "(Zamir et al. 2020)",
        default_noise="camera",
        infer_kwargs=_infer,
        convert_state_dict=_from_official,
        paper_params=31_800_000,  # "31.8M" in the comparison tables of later papers (e.g. Restormer); colour
        paper_kwargs={"channels": 3},
        test_kwargs={"features": 8, "groups": 1, "msrb": 1, "height": 3, "width": 2},
    )
)
