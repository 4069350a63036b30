"""Section `sphere`: equirect vs sphere-true dreaming of a real 360° photo, measured as a headset shows it.

`sample_media/testRoom1_2kMono.jpg` resized (INTER_AREA) to the dream size, rolled by a few yaws (the
seam and the pole views then see other content; the dream of each yaw has its own seed), dreamed with
the default preset's schedule (Lite0 block9, 4 octaves × 1.4, 10 iterations, step 1.5, jitter 32, tile
512) in each mode, interleaved so drift in the machine's load hits every mode alike. Per mode, the mean
over yaws of `stages.measure.vr_metrics` (radial anisotropy up / down / horizon on the sphere and on the view
plane, pole strength up / down, structure-matched seam with its one-column noise) and CPU seconds per
dream (process time, one torch thread unless told otherwise), with the cost ratio against `equirect`.

Callable from Python (`measure(...)`) for variants, and from the shell:
    python -m bench.sphere_bench --size 512 --yaws 4 [--variant NAME=k=v,k=v ...]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from bench.common import REPO

IMG = REPO / "sample_media" / "testRoom1_2kMono.jpg"
# In 1/512 turns: not multiples of 90°, where the room's lines sit.
YAWS = (37, 101, 219, 333, 171, 290, 59, 250, 13, 83, 147, 197, 271, 311, 401, 467)
KEYS = ("aniso_up", "aniso_down", "aniso_horizon", "aniso_up_plane", "aniso_down_plane", "aniso_horizon_plane",
        "strength_up", "strength_down", "horizon_abs", "seam", "seam_rel", "seam_null_mean", "seam_null_std",
        "seam_plain")


def room(w: int):
    import cv2

    bgr = cv2.imread(str(IMG), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(IMG)
    return cv2.cvtColor(cv2.resize(bgr, (w, w // 2), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def photo_cube(w: int):
    """A second real 360° scene: six real photographs on the faces of a cube (scikit-image's rocket, motorcycle,
    coffee and astronaut around, the Hubble deep field overhead, gravel underfoot), made equirect with
    py360convert's c2e. A starry sky above and a busy ground below: the content is unlike testRoom1's at
    both poles."""
    import cv2
    import numpy as np
    import py360convert
    import skimage.data as d

    def square(img, n: int = 512):
        img = (img if img.ndim == 3 else np.dstack([img] * 3))[..., :3]
        h, w_ = img.shape[:2]
        s = min(h, w_)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w_ - s) // 2:(w_ - s) // 2 + s]
        return cv2.resize(img, (n, n), interpolation=cv2.INTER_AREA)

    faces = {"F": d.rocket(), "R": d.stereo_motorcycle()[0], "B": d.coffee(), "L": d.astronaut(),
             "U": d.hubble_deep_field(), "D": d.gravel()}
    e = py360convert.c2e({k: square(v) for k, v in faces.items()}, 1024, 2048, cube_format="dict")
    e = np.clip(e, 0, 255).astype(np.uint8)
    return cv2.resize(e, (w, w // 2), interpolation=cv2.INTER_AREA)


def source_image(source: str, w: int):
    """The test photo by name: room (testRoom1), room_flipped (upside down: the poles swap content), photos
    (`photo_cube`) or noise (`isotropic_texture`)."""
    if source == "room":
        return room(w)
    if source == "room_flipped":
        return room(w)[::-1].copy()
    if source == "photos":
        return photo_cube(w)
    return isotropic_texture(w)


def isotropic_texture(w: int, seed: int = 0, waves: int = 400):
    """A colour texture that is statistically the same everywhere on the sphere and in every direction:
    sums of plane waves cos(f·ω·d + φ) over random 3D directions ω, evaluated at the pixel directions
    (wavelengths 4–64 equirect columns at the equator). A control without the room's meridians and
    parallels, which converge on its poles and which any dream follows."""
    import numpy as np

    from stages.vr.sphere import equirect_directions

    rng = np.random.default_rng(seed)
    d = equirect_directions(w // 2, w).numpy().reshape(-1, 3).astype(np.float64)
    out = np.empty((d.shape[0], 3))
    for c in range(3):
        om = rng.normal(size=(waves, 3))
        om /= np.linalg.norm(om, axis=1, keepdims=True)
        wavelength = np.exp(rng.uniform(np.log(4), np.log(64), waves)) * 2 * np.pi / w
        amp = wavelength ** 0.5  # some more energy in the coarse waves, like a photo
        proj = (d @ (om * (2 * np.pi / wavelength)[:, None]).T) + rng.uniform(0, 2 * np.pi, waves)
        v = (np.cos(proj) * amp).sum(axis=1)
        out[:, c] = 128 + 50 * v / v.std()
    return np.clip(out, 0, 255).reshape(w // 2, w, 3).astype(np.uint8)


def schedules(**sphere_kw) -> dict:
    """The two modes as the plan builds them today: `equirect` (wrap, cos-latitude weighting) and `sphere`."""
    from stages.dream.ascent import Schedule
    from stages.vr.sphere import SphereSpec

    base = Schedule(equirect=True, wrap_x=True, pole_exponent=1.0)  # the default preset's values
    return {"equirect": base, "sphere": replace(base, sphere=SphereSpec(**sphere_kw))}


def dream_once(src, net, obj, sch, seed: int):
    """H×W×3 uint8 → float32 0..255, as the engine dreams a frame (CPU, fp32)."""
    import torch

    from stages.dream import ascent as D

    x = D.to_tensor(src, torch.device("cpu"))
    y = D.dream_octaves(x, net, obj, sch, torch.Generator().manual_seed(seed))
    return D.to_array(y)


def measure(modes: dict, w: int = 512, yaws=YAWS[:4], seed: int = 0, net=None, verbose: bool = True,
            source: str = "room", seam_control: bool = False) -> dict:
    """{mode: {metric: mean over yaws, 'cpu_s': mean CPU seconds per dream, 'per_yaw': [...]}}.

    seam_control: also dream each yaw's frame rolled by half a turn and roll the dream back, so the
    columns that meet at the seam were dreamed in the middle of the frame, where no mode has a seam;
    `seam_centre` is the seam measure there and `seam_excess` = seam ÷ seam_centre, what the seam itself
    adds beyond the content that happens to lie there (the structure matching cannot remove all of it).
    """
    import numpy as np

    from stages.dream import ascent as D
    from stages.dream import zoo
    from stages.measure.vr_metrics import seam_jump, vr_report

    net = net or zoo.build_model("efficientnet_lite0")
    obj = D.Objective({"block9": 1.0})
    src0 = source_image(source, w)
    rows: dict = {m: [] for m in modes}
    for i, yaw in enumerate(yaws):
        src = np.roll(src0, yaw * w // 512, axis=1)
        for label, sch in modes.items():
            t, c = time.perf_counter(), time.process_time()
            out = dream_once(src, net, obj, sch, seed + i)
            cpu, wall = time.process_time() - c, time.perf_counter() - t
            rep = vr_report(src, D.quantize(out)) | {"cpu_s": cpu, "wall_s": wall}
            if seam_control:
                half = np.roll(dream_once(np.roll(src, w // 2, axis=1), net, obj, sch, seed + i), -(w // 2), axis=1)
                rep["seam_centre"] = seam_jump(src, D.quantize(half))["seam"]
                rep["seam_excess"] = rep["seam"] / rep["seam_centre"]
            rows[label].append(rep)
            if verbose:
                print(f"  yaw {yaw:3d} {label:10s} " + " ".join(f"{k}={rep[k]:.3f}" for k in
                      ("aniso_up", "aniso_down", "strength_up", "strength_down", "seam", "cpu_s")), flush=True)
    res = {}
    for label, reps in rows.items():
        keys = (*KEYS, "cpu_s", "wall_s") + (("seam_centre", "seam_excess") if seam_control else ())
        res[label] = {k: float(np.mean([r[k] for r in reps])) for k in keys}
        if seam_control:
            res[label]["seam_excess_sem"] = float(np.std([r["seam_excess"] for r in reps]) / np.sqrt(len(reps)))
        res[label]["seam_sem"] = float(np.std([r["seam"] for r in reps]) / np.sqrt(len(reps)))
        res[label]["seam_rel_sem"] = float(np.std([r["seam_rel"] for r in reps]) / np.sqrt(len(reps)))
        res[label]["per_yaw"] = reps
    base = res.get("equirect", next(iter(res.values())))["cpu_s"]
    for r in res.values():
        r["cost"] = r["cpu_s"] / base
    return res


def print_table(res: dict, title: str = "") -> None:
    cols = ("aniso_up", "aniso_down", "aniso_horizon", "aniso_up_plane", "aniso_down_plane", "strength_up",
            "strength_down", "horizon_abs", "seam", "seam_sem", "seam_null_mean", "seam_rel", "cpu_s", "cost")
    if title:
        print(title)
    if "seam_excess" in next(iter(res.values())):
        cols = cols + ("seam_centre", "seam_excess", "seam_excess_sem")
    print(f"{'mode':14s}" + "".join(f"{c:>17s}" for c in cols))
    for label, r in res.items():
        print(f"{label:14s}" + "".join(f"{r[c]:17.3f}" for c in cols))


def _parse_variant(text: str) -> tuple[str, dict]:
    name, _, kv = text.partition("=")
    kw = {}
    for item in filter(None, kv.split(",")):
        k, _, v = item.partition("=")
        kw[k] = v if k in ("layout", "gather") else (int(v) if k == "supersample" else float(v))
    return name, kw


def run(ctx) -> dict:
    """`python -m bench --only sphere`: both modes (and sphere without its latitude balance,
    paired) at 512×256, yaw by yaw while the budget lasts (at most
    4 yaws, 2 with --quick; about 20 s a yaw on one CPU thread). CPU only: the cost ratio is a CPU one."""
    import torch

    torch.set_num_threads(1)
    want = YAWS[:2] if ctx.quick else YAWS[:4]
    modes, net, per_yaw, res = schedules(), None, None, {}
    modes["sphere_unbalanced"] = schedules(balance=0.0)["sphere"]  # the latitude balance off (paired)
    done: list[int] = []
    for yaw in want:
        if per_yaw is not None and per_yaw * 1.3 > ctx.budget.left():
            break
        t = time.perf_counter()
        from stages.dream import zoo

        net = net or zoo.build_model("efficientnet_lite0")
        one = measure(modes, w=512, yaws=(yaw,), seed=len(done), net=net, verbose=False)
        for label, r in one.items():
            res.setdefault(label, []).extend(r["per_yaw"])
        done.append(yaw)
        per_yaw = time.perf_counter() - t
    if not done:
        print("sphere: skipped, no budget left")
        return {"skipped": True}
    import numpy as np

    table = {label: {k: float(np.mean([r[k] for r in reps])) for k in (*KEYS, "cpu_s")}
             for label, reps in res.items()}
    for label, reps in res.items():
        table[label]["seam_sem"] = float(np.std([r["seam"] for r in reps]) / np.sqrt(len(reps)))
        table[label]["cost"] = table[label]["cpu_s"] / table["equirect"]["cpu_s"]
    note = "" if len(done) == len(want) else f" (budget: {len(done)} of {len(want)} yaws)"
    print_table(table, f"sphere: testRoom1 512x256, default preset, 1 torch thread, means over yaws {done}{note}")
    return {"yaws": done, "modes": table}


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="equirect width (height = width / 2)")
    p.add_argument("--yaws", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", action="append", default=[], help="NAME=key=value,... SphereSpec fields")
    p.add_argument("--no-equirect", action="store_true")
    p.add_argument("--source", choices=("room", "room_flipped", "photos", "noise"), default="room")
    p.add_argument("--json", help="write every number (per yaw too) to this file")
    p.add_argument("--seam-control", action="store_true", help="also dream each yaw rolled by half a turn")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    modes = schedules()
    if a.no_equirect:
        modes.pop("equirect")
    for v in a.variant:
        name, kw = _parse_variant(v)
        modes[name] = schedules(**kw)["sphere"]
    res = measure(modes, w=a.size, yaws=YAWS[:a.yaws], source=a.source, seam_control=a.seam_control)
    print_table(res, f"{a.source} {a.size}x{a.size // 2}, {a.yaws} yaws, {a.threads} thread(s)")
    if a.json:
        import json

        from bench.common import machine_info

        with open(a.json, "w") as f:
            json.dump({"machine": machine_info(), "args": vars(a), "modes": {k: repr(v) for k, v in modes.items()},
                       "results": res}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
