"""`deepdream image`: one still in, one dreamed still out (equirect and stereo stills included)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

from pipeline.config import Config, write_sidecar
from pipeline.render.engine import DreamEngine, check_config
from pipeline.render.layout import resolve_layout
from pipeline.render.plan import DreamPlan, check_render_output
from pipeline.render.step import dream_frame
from stages.media.still import output_format, read_still, resize_max_side, write_still

log = logging.getLogger(__name__)


def run_image(src: Path, dst: Path, cfg: Config, *, progress: bool = True) -> Path:
    # All checks first: nothing loads and nothing is written until input, output and config are valid.
    output_format(dst)
    check_render_output(src, dst, cfg)
    check_config(cfg)
    still = read_still(src)
    rgb = resize_max_side(still.rgb, cfg.input.max_side)
    layout = resolve_layout(cfg, rgb)
    plan = DreamPlan.resolve(cfg, layout)
    engine = DreamEngine(cfg)

    t0 = time.perf_counter()
    bar = tqdm(total=1, desc="dream", unit="step", disable=not progress, leave=False)

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    out = dream_frame(engine, plan, rgb, index=0, on_step=on_step).rgb8()
    bar.close()
    write_still(dst, out, still.alpha, icc=still.icc)
    cfg_path = write_sidecar(dst, cfg, {"source": src,
                                        "layout": f"{layout.projection} {layout.stereo} ({layout.how})"})
    log.info("wrote %s (%dx%d, %s, %.1f s); config in %s", dst, out.shape[1], out.shape[0],
             layout.projection, time.perf_counter() - t0, cfg_path)
    return dst
