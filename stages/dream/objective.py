"""The dream's objective: what a DeepDream step climbs, given a network's features.

Its own module because two gradient paths use it: the flat/equirect ascent in `stages.dream.ascent` and the
sphere-true views in `stages.vr.sphere` (which `stages.dream.ascent` calls). Neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch


@dataclass(frozen=True, slots=True)
class Objective:
    """Σ_l w_l · mean(a_l²) over `layers`, optionally over a channel subset, or a guide's best match."""

    layers: Mapping[str, float]
    channels: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    guide: Mapping[str, torch.Tensor] = field(default_factory=dict)  # layer → C×K guide features

    @property
    def names(self) -> list[str]:
        return list(self.layers)



def objective_loss(feats: Mapping[str, torch.Tensor], obj: Objective, area_scale: float = 1.0) -> torch.Tensor:
    """Per-sample-normalised objective summed over the batch.

    `area_scale` = tile area / image area: a tile's loss is then on the same scale as the whole
    image's, so tiled and untiled gradients agree.
    """
    total = None
    for name, weight in obj.layers.items():
        a = feats[name].float()
        if name in obj.channels:
            a = a[:, list(obj.channels[name])]
        per_sample = a[0].numel() / area_scale
        if name in obj.guide:
            g = obj.guide[name].to(a)
            flat = a.flatten(2)  # N×C×P
            match = torch.einsum("ncp,ck->npk", flat, g).argmax(-1)  # best guide vector per position
            term = (flat * g[:, match].permute(1, 0, 2)).sum() / per_sample
        else:
            term = a.pow(2).sum() / per_sample
        total = weight * term if total is None else total + weight * term
    assert total is not None
    return total
