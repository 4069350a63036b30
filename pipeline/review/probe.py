"""`deepdream probe`: a video's properties and the projection/stereo layout a render would use."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config
from stages.media import decode

# The stream facts copied from `stages.media.decode.probe`, in output order.
_FIELDS = ("width", "height", "fps", "frames", "duration", "video_codec", "pix_fmt", "rotation",
           "sample_aspect_ratio", "audio")


def probe_json(path: Path, cfg: Config) -> dict:
    """JSON-ready description of `path`.

    width/height are display size (square pixels, after rotation): the size a render's frames have before
    input.max_side; sample_aspect_ratio is the source pixels' width ÷ height ("num/den") where they are not
    square, else null; fps is "num/den"; frames is null when the container
    does not say; audio is the first audio stream's codec name or null. projection (flat|equirect) and
    stereo (mono|top-bottom|left-right) are decided exactly as a render decides them, from `cfg`
    (projection/stereo keys), the file's spherical metadata, or the first frame; layout_source says
    which (forced|metadata|heuristic|default). Bad input raises InputError.
    """
    info = decode.probe(path)  # bad input fails here, before the slow layout import (torch)
    from pipeline.render.layout import resolve_layout

    with decode.VideoReader(path) as reader:
        first = next(iter(reader))
        layout = resolve_layout(cfg, first.rgb, side_projection=reader.side_projection,
                                side_stereo=reader.side_stereo)
    out = {key: info[key] for key in _FIELDS}
    out.update(projection=layout.projection, stereo=layout.stereo, layout_source=layout.how)
    return out
