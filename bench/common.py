"""Helpers shared by bench sections: machine info, the run's time budget, memory probes, tables.

A section is a function `run(ctx: Context) -> dict` (see `bench/__main__.py`); it prints its own table
and returns the numbers it measured, which end up in `--json` under `sections.<name>`.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "mem_total_gib": _mem_total_gib(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cuda": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["cuda"] = {
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "mem_gib": p.total_memory / 2**30,
            "count": torch.cuda.device_count(),
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "bf16": torch.cuda.is_bf16_supported(),
        }
    return info


def print_machine(info: dict[str, Any]) -> None:
    la = info.get("loadavg_start")
    print("machine")
    print(f"  cpu            {info['cpu']}  ({info['cpu_count']} logical cores, {info['cpu_usable']} usable, "
          f"torch threads {info['torch_threads']})")
    if info.get("mem_total_gib"):
        print(f"  ram            {info['mem_total_gib']:.1f} GiB")
    print(f"  python/torch   {info['python']} / torch {info['torch']}  ({info['platform']})")
    if la:
        print(f"  load average   {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}  (1/5/15 min at start; "
              f"other processes skew CPU timings)")
    c = info.get("cuda")
    if c:
        print(f"  cuda           {c['name']} (sm {c['capability']}, {c['mem_gib']:.1f} GiB, x{c['count']}), "
              f"CUDA {c['cuda_runtime']}, cuDNN {c['cudnn']}, cudnn.benchmark={c['cudnn_benchmark']}, "
              f"bf16={c['bf16']}")
    else:
        print("  cuda           none (CPU only)")


# ---------------------------------------------------------------- run context and budget


@dataclass
class Budget:
    """Wall-clock budget of the whole run; sections skip (and say so) what would not fit."""

    total_s: float
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total_s - self.elapsed()


@dataclass
class Context:
    quick: bool
    devices: list[str]  # "cpu", "cuda"
    budget: Budget
    machine: dict[str, Any]
    args: Any = None  # the parsed argparse namespace, for section-specific options


# ---------------------------------------------------------------- memory probes (CPU: this process)


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    v = _status_bytes("VmRSS")
    if v is not None:
        return v
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reset_peak_rss() -> bool:
    """Resets this process's VmHWM to its current RSS (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    v = _status_bytes("VmHWM")
    if v is not None:
        return v
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


# ---------------------------------------------------------------- output


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 100:
        return f"{ms:.0f}"
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_mib(b: float | None) -> str:
    return "-" if b is None else f"{b / MIB:.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"x{a / b:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A plain aligned text table; `right[i]` right-aligns column i (numbers)."""
    right = list(right) if right is not None else [False] * len(headers)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [str(c).rjust(w) if r else str(c).ljust(w)
               for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def banner(title: str) -> None:
    print()
    print(f"== {title} " + "=" * max(0, 100 - len(title) - 4))
