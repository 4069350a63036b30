"""The `deepdream` command line (also `python -m pipeline`). Thin: parse, load config, call, map errors."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from pipeline import log as logsetup
from pipeline.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USER, InputError

log = logging.getLogger("deepdream")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default="default",
                   help="preset name (configs/NAME.yaml) or a YAML file; default: default")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, value parsed as YAML (e.g. --set dream.octaves=3); repeatable")


class _Parser(argparse.ArgumentParser):
    """argparse with the tool's error contract: one `error: ...` line and exit code 2 (no usage dump)."""

    def error(self, message: str):
        print(f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="deepdream", description="DeepDream for images, video and 360° VR footage.")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("image", help="dream one still image (PNG/JPEG/WebP)")
    s.add_argument("input", type=Path)
    s.add_argument("output", type=Path)
    _config_args(s)

    s = sub.add_parser("video", help="dream a video (resumable; re-run the same command to resume)")
    s.add_argument("input", type=Path)
    s.add_argument("output", type=Path)
    _config_args(s)
    s.add_argument("--restart", action="store_true", help="discard an unfinished run of this output")

    s = sub.add_parser("animate", help="dream a still (or a video's last frame) in a feedback loop under camera "
                                       "motion: the infinite zoom, flat or 360°, to music (resumable)")
    s.add_argument("input", type=Path, help="a still (PNG/JPEG/WebP) or a video (its last frame, or animate.from)")
    s.add_argument("output", type=Path, help="an MP4")
    _config_args(s)
    s.add_argument("--restart", action="store_true", help="discard an unfinished run of this output")

    s = sub.add_parser("probe", help="print a video's properties as JSON")
    s.add_argument("input", type=Path)
    _config_args(s)

    s = sub.add_parser("metrics", help="temporal warp error and dream strength of a dreamed video, as JSON")
    s.add_argument("source", type=Path)
    s.add_argument("dreamed", type=Path)
    s.add_argument("--plot", type=Path, help="also write a per-frame PNG plot here")
    s.add_argument("--flow", default="dis", choices=["dis", "farneback"], help="flow for the measurement")
    s.add_argument("--projection", default="auto", choices=["auto", "flat", "equirect"],
                   help="equirect wraps the flow across the 0/360° seam")

    s = sub.add_parser("preview", help="a look-around sheet of a result (six 90° views per eye for 360°, "
                                       "a strip of frames for flat video) as PNG/JPEG/WebP")
    s.add_argument("input", type=Path, help="a dreamed video or still (any video works)")
    s.add_argument("output", type=Path)
    s.add_argument("--source", type=Path, help="the original: its views go below the dream's")
    s.add_argument("--at", type=float, help="seconds into the input (default: the middle frame)")
    _config_args(s)

    s = sub.add_parser("view", help="look around a result in the browser (a local page on 127.0.0.1), "
                                    "optionally beside its source")
    s.add_argument("input", type=Path, help="the dreamed video")
    s.add_argument("--source", type=Path, help="the original, shown beside it following the same direction")
    s.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default 8360; 0 = any free port)")
    _config_args(s)

    s = sub.add_parser("layers", help="list a model's layers with channels and stride")
    s.add_argument("--model", default=None, help="model name (default: the preset's)")
    _config_args(s)
    return p


def _render_config(a):
    """A render's config, with OUTPUT and the config written beside it checked against every input file, the `-c`
    file included: rendering with `-c OUTPUT.yaml` would write over the file it was given."""
    from pipeline.config import load_config, preset_path
    from pipeline.render.plan import check_render_output

    cfg = load_config(a.config, a.overrides)
    check_render_output(a.input, a.output, cfg, config_file=Path(str(preset_path(a.config))))
    return cfg


def _cmd_image(a) -> int:
    from pipeline.render.image import run_image

    run_image(a.input, a.output, _render_config(a), progress=sys.stderr.isatty())
    print(a.output)
    return EXIT_OK


def _cmd_video(a) -> int:
    from pipeline.render.runner import run_video

    run_video(a.input, a.output, _render_config(a), restart=a.restart)
    print(a.output)
    return EXIT_OK


def _cmd_animate(a) -> int:
    from pipeline.render.animate import run_animation

    run_animation(a.input, a.output, _render_config(a), restart=a.restart)
    print(a.output)
    return EXIT_OK


def _cmd_probe(a) -> int:
    from pipeline.config import load_config
    from pipeline.review.probe import probe_json

    print(json.dumps(probe_json(a.input, load_config(a.config, a.overrides)), indent=2))
    return EXIT_OK


def _cmd_metrics(a) -> int:
    from pipeline.review.measure import run_metrics

    print(json.dumps(run_metrics(a.source, a.dreamed, plot=a.plot, flow=a.flow, projection=a.projection),
                     indent=2))
    return EXIT_OK


def _cmd_preview(a) -> int:
    from pipeline.config import load_config
    from pipeline.review.preview import run_preview

    run_preview(a.input, a.output, load_config(a.config, a.overrides), source=a.source, at=a.at)
    print(a.output)
    return EXIT_OK


def _cmd_view(a) -> int:
    from pipeline.config import load_config
    from pipeline.review.view import DEFAULT_PORT, run_view

    port = DEFAULT_PORT if a.port is None else a.port
    run_view(a.input, load_config(a.config, a.overrides), source=a.source, port=port)
    return EXIT_OK


def _cmd_layers(a) -> int:
    from pipeline.config import load_config
    from pipeline.render.engine import resolve_layers
    from stages.dream import zoo

    cfg = load_config(a.config, a.overrides)
    name = a.model or cfg.model.name
    zoo.check_model_name(name)
    defaults = set(resolve_layers(cfg)) if name == cfg.model.name else set(zoo.DEFAULT_LAYERS[name])
    print(f"{name}: layer, channels, stride ('*' = default dream layer of preset {a.config!r})")
    for li in zoo.layer_table(name):
        print(f"{'*' if li.name in defaults else ' '} {li.name:<16} {li.channels:>5} {li.stride:>4}")
    return EXIT_OK


COMMANDS = {"image": _cmd_image, "video": _cmd_video, "probe": _cmd_probe, "metrics": _cmd_metrics,
            "preview": _cmd_preview, "layers": _cmd_layers, "view": _cmd_view, "animate": _cmd_animate}


def main(argv: list[str] | None = None) -> int:
    # Decode, flow and encode threads share the cores with torch: OpenMP's default spin-waiting then
    # burns them (measured 10x slower dreams on 2 busy cores). Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A path printed back (OUTPUT) may hold bytes that are not UTF-8, as Linux names may: print them as they are.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    args = build_parser().parse_args(argv)
    logsetup.setup(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        if args.verbose:
            traceback.print_exc()
        msg = " ".join(str(e).split())
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed by its reader (`deepdream probe x.mp4 | head`): stop quietly, as other tools do; a pipe
        # closed mid-write would raise again when Python flushes stdout at exit, so point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if e.errno not in (errno.ENAMETOOLONG, errno.ELOOP):
            return _internal(e, args.verbose)
        # A path the system cannot look up (a name over 255 bytes, a link loop) is the user's: the checks that
        # stat a path come before anything is written, wherever they are.
        print(f"error: {str(e.filename or '')[:60]}…: {e.strerror}", file=sys.stderr)
        return EXIT_USER
    except Exception as e:
        return _internal(e, args.verbose)


def _internal(e: BaseException, verbose: bool) -> int:
    """An internal failure: said in one line, unless asked for the traceback."""
    if verbose:
        traceback.print_exc()
    print(f"error: internal failure: {type(e).__name__}: {' '.join(str(e).split())} "
          f"(run with --verbose for the traceback)", file=sys.stderr)
    return EXIT_INTERNAL
