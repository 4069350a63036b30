"""One dream-iteration benchmark case: time `ascent_step` and measure its peak memory.

CUDA cases run in the bench process (peak = `torch.cuda.max_memory_allocated` growth over the
model-loaded baseline, stats reset per case). CPU cases run each in a fresh process,

    python -m bench.case '{"device": "cpu", "model": "googlenet", "h": 512, "w": 512}'

which prints one line `BENCH_RESULT {json}`: there the peak is the growth of the process's peak RSS
(VmHWM, reset through /proc/self/clear_refs right after the model is loaded) over its RSS at that point,
so nothing an earlier case allocated or left in the heap is counted or reused.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass

from bench.common import peak_rss_bytes, reset_peak_rss, rss_bytes

RESULT_TAG = "BENCH_RESULT "
LITE0 = "efficientnet_lite0"


@dataclass(frozen=True)
class Case:
    device: str  # "cpu" | "cuda"
    model: str
    h: int
    w: int
    variant: str = "fp32"  # table label
    tile: int = 0  # Schedule.tile; 0 = the whole image in one forward
    frozen: bool = True  # FeatureNet.finalize() freezes; False = net.requires_grad_(True)
    amp: bool = False  # autocast with amp_dtype_for(device) (CUDA: bf16, else fp16)
    channels_last: bool = False  # model and input in channels_last (what the engine does on CUDA)
    tile_batch_px: int = 0  # Schedule.tile_batch_px (the engine stacks up to 32·512² on CUDA)
    warmup: int = 1
    iters: int = 3
    warm_at_tile: bool = False  # warm up on one tile-sized image: every tile has that shape
    cap_s: float = 20.0  # stop timing once this much time went by (after at least one iteration)

    @property
    def size(self) -> str:
        return f"{self.w}x{self.h}"

    def work_px(self) -> int:
        """Pixels pushed through the network per iteration (tiles overlap: more than h·w)."""
        if self.tile <= 0 or (self.h <= self.tile and self.w <= self.tile):
            return self.h * self.w
        from stages.dream.ascent import tile_starts

        th, tw = min(self.tile, self.h), min(self.tile, self.w)
        ov = max(8, self.tile // 4)
        ny = len(tile_starts(self.h, th, ov, (th - ov) // 2, wrap=False))
        nx = len(tile_starts(self.w, tw, ov, (tw - ov) // 2, wrap=False))
        return ny * nx * th * tw

    def warm_px(self) -> int:
        if self.warm_at_tile and self.tile > 0:
            return min(self.tile, self.h) * min(self.tile, self.w)
        return self.work_px()


def load_net(model: str, device: str, *, frozen: bool = True, channels_last: bool = False):
    """The FeatureNet as the engine builds it; googlenet with random weights (timing only, offline)."""
    import torch

    from stages.dream import zoo

    net = zoo.build_model(model, random_weights=model != LITE0)
    if not frozen:
        net.requires_grad_(True)
    net = net.to(torch.device(device))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def _image(h: int, w: int, device, channels_last: bool):
    import torch

    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def run_case(case: Case, net=None) -> dict:
    """Warm up, time `case.iters` ascent steps (jitter + forward + backward + step), measure memory."""
    import torch

    from stages.dream import ascent as D
    from stages.dream.zoo import DEFAULT_LAYERS

    t_case = time.perf_counter()
    dev = torch.device(case.device)
    cuda = dev.type == "cuda"
    if net is None:
        net = load_net(case.model, case.device, frozen=case.frozen, channels_last=case.channels_last)
    load_s = time.perf_counter() - t_case
    layer = DEFAULT_LAYERS[case.model][0]
    obj = D.Objective({layer: 1.0})
    sch = D.Schedule(tile=case.tile, tile_batch_px=case.tile_batch_px)
    amp = D.amp_dtype_for(dev) if case.amp else None
    gen = torch.Generator().manual_seed(0)  # the engine's generator lives on the CPU too

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    gc.collect()
    mem_exact = True
    if cuda:
        torch.cuda.empty_cache()
        sync()
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        mem_kind = "CUDA max_memory_allocated growth over model-loaded baseline"
    else:
        mem_exact = reset_peak_rss()
        base = rss_bytes()
        mem_kind = "peak RSS growth over model-loaded baseline (fresh process)"
        if not mem_exact:
            mem_kind += "; VmHWM not resettable: upper bound incl. model loading"

    out: dict = asdict(case) | {"layer": layer, "amp_dtype": str(amp).replace("torch.", "") if amp else None,
                                "work_px": case.work_px(), "load_s": load_s, "mem_kind": mem_kind,
                                "mem_exact": mem_exact}
    try:
        wh, ww = (min(case.tile, case.h), min(case.tile, case.w)) if case.warm_at_tile and case.tile \
            else (case.h, case.w)
        t0 = time.perf_counter()
        x = _image(wh, ww, dev, case.channels_last)
        for _ in range(case.warmup):
            x = D.ascent_step(x, net, obj, sch, gen, amp)
        sync()
        out["warm_s"] = time.perf_counter() - t0
        if (wh, ww) != (case.h, case.w):
            del x
            x = _image(case.h, case.w, dev, case.channels_last)
        times: list[float] = []
        cpu_times: list[float] = []  # this process's CPU time (all threads): the load it put on the CPU
        t_start = time.perf_counter()
        for _ in range(max(1, case.iters)):
            t, c = time.perf_counter(), time.process_time()
            x = D.ascent_step(x, net, obj, sch, gen, amp)
            sync()
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
            if time.perf_counter() - t_start >= case.cap_s:
                break
        if not bool(torch.isfinite(x).all()):
            out["warning"] = "non-finite image after the steps"
        del x
    except torch.cuda.OutOfMemoryError as e:
        out["error"] = "CUDA out of memory: " + str(e).splitlines()[0][:120]
        times, cpu_times = [], []
    if cuda:
        out["peak_bytes"] = torch.cuda.max_memory_allocated(dev) - base
        out["reserved_peak_bytes"] = torch.cuda.max_memory_reserved(dev)
        out["model_bytes"] = base
    else:
        out["peak_bytes"] = peak_rss_bytes() - base
        out["model_rss_bytes"] = base
    ms = [t * 1000 for t in times]
    out["ms"] = ms
    out["iters_done"] = len(ms)
    out["ms_median"] = statistics.median(ms) if ms else None
    out["ms_min"] = min(ms) if ms else None
    out["cpu_ms_median"] = statistics.median(cpu_times) * 1000 if cpu_times else None
    out["ms_per_mpx"] = out["ms_median"] / (case.h * case.w / 1e6) if ms else None
    out["case_s"] = time.perf_counter() - t_case
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
    return out


def estimate_s(case: Case, ref_ms_512: float, overhead_s: float) -> tuple[float, float]:
    """(warm-up + overhead seconds, seconds per iteration) from the same model's 512² time: pixel-linear,
    which over-estimates large untiled frames (per-pixel cost falls with size): a safe gate."""
    per_px = ref_ms_512 / 1000 / (512 * 512)
    return overhead_s + case.warmup * case.warm_px() * per_px, case.work_px() * per_px


def iters_that_fit(case: Case, left_s: float, ref_ms_512: float | None, overhead_s: float) -> int:
    if ref_ms_512 is None:
        return case.iters if left_s > 0 else 0
    fixed, per_iter = estimate_s(case, ref_ms_512, overhead_s)
    return max(0, min(case.iters, math.floor((left_s - fixed) / per_iter)))


def main(argv: list[str]) -> int:
    case = Case(**json.loads(argv[1]))
    try:
        res = run_case(case)
    except Exception as e:  # reported as a row, the bench goes on
        res = asdict(case) | {"error": f"{type(e).__name__}: {e}"}
    print(RESULT_TAG + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
