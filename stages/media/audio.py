"""Audio envelopes for reactive dreaming: a soundtrack in, one 0..1 value per analysis hop out.

Decode any audio stream PyAV reads, mix down to mono and resample to `ANALYSIS_RATE`, then compute a
feature per hop from a numpy STFT: `onset` (spectral flux), `rms` (loudness) or `beat` (tracked beats as
impulses). The feature is shaped by a one-pole attack/release follower and normalised to 0..1, then
sampled at the video's frame times.

Why numpy and not librosa: the three features need one STFT, a band matrix, an autocorrelation and a
short dynamic programme (~150 lines here); librosa would add numba, scipy, scikit-learn and soundfile to
the install for the same maths, and its onset/beat defaults would still need the same alignment checks.
The STFT runs in blocks, so a long soundtrack costs memory for its hop envelopes only (~86 floats/s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stages.common import InputError
from stages.media.decode import open_media, short_error

log = logging.getLogger(__name__)

FEATURES = ("onset", "rms", "beat")
ANALYSIS_RATE = 22050  # Hz: keeps hi-hats and snares (< 11 kHz); kicks need far less
N_FFT = 1024  # 46 ms window: resolves a kick's 40-120 Hz energy into a few bins
HOP = 256  # 11.6 ms: several hops per video frame, so the follower's time constants mean what they say
FRAME_RATE = ANALYSIS_RATE / HOP  # envelope values per second
NORM_PERCENTILE = 99.0  # scale so 1 % of hops reach 1: one stray click cannot flatten the rest
SPARSE_FLOOR = 0.02  # ...but never below 2 % of the peak, or a lone click in silence would lift the hiss to 1
SILENCE_RMS = 1e-4  # −80 dBFS: a quieter track reacts to nothing rather than to its codec noise
LOG_GAIN = 1e6  # band power → log1p(gain·P): about 60 dB of range above the floor count as change
# A centred frame's flux jumps once an onset reaches the heavy middle half of its Hann window, about
# N_FFT/4 samples before the frame's centre; dating flux that much later puts its peaks on the onsets
# (measured on kicks: peaks 5-16 ms early without it, −3..+6 ms with it).
ONSET_LAG = N_FFT / 4 / ANALYSIS_RATE
_BLOCK = 1024 * HOP  # samples per STFT block (~12 s): bounds memory on long tracks (~40 MB of FFT work)
_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann


def _band_matrix() -> np.ndarray:
    """Bins → log-spaced bands (mean power per band). Plain bin-mean flux is ruled by the hundreds of
    high bins; log bands give a kick's few low bins the same vote as a hi-hat's many."""
    bins = N_FFT // 2 + 1
    edges = np.unique(np.geomspace(2, bins, 40).astype(int))  # from ~43 Hz; each band >= 1 bin
    m = np.zeros((bins, len(edges) - 1), np.float32)
    for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        m[a:b, j] = 1.0 / (b - a)
    return m


_BANDS = _band_matrix()


@dataclass(frozen=True)
class Envelope:
    """One value in 0..1 per hop; hop k lies at `t0 + k / rate` seconds on the audio's own clock."""

    values: np.ndarray
    rate: float
    t0: float
    feature: str
    tempo: float | None = None  # BPM, for the beat feature

    def at(self, times: Sequence[float] | np.ndarray, span: float | Sequence[float] | np.ndarray = 0.0) -> np.ndarray:
        """The envelope at `times` (seconds, same clock); 0 where there is no audio.

        With `span` (a frame's duration, scalar or per time) each value is the peak over [t, t + span]:
        the frame reacts to whatever sounds while it is on screen. Point sampling would let a kick that
        falls between two frame times show on neither at full height, by chance of the hop phase.
        """
        t = np.asarray(times, np.float64)
        grid = self.t0 + np.arange(len(self.values)) / self.rate
        out = np.interp(t, grid, self.values, left=0.0, right=0.0)
        spans = np.broadcast_to(np.asarray(span, np.float64), t.shape)
        if not np.any(spans > 0):
            return out
        out = np.maximum(out, np.interp(t + spans, grid, self.values, left=0.0, right=0.0))
        first = np.searchsorted(grid, t, side="left")  # hops strictly inside (t, t + span]
        last = np.searchsorted(grid, t + spans, side="right")
        for i in np.flatnonzero(last > first):
            out[i] = max(out[i], self.values[first[i]:last[i]].max())
        return out


def frame_times(pts: Iterable[int], time_base: Fraction, origin: int = 0) -> np.ndarray:
    """Seconds of each frame, (pts − origin) × time_base computed exactly, rounded once to float64.

    Accumulating 1/rate in floats drifts at 30000/1001; the exact product does not.
    """
    tb = Fraction(time_base)
    return np.array([float((p - origin) * tb) for p in pts], np.float64)


# ------------------------------------------------------------------------------------------- decoding

def read_audio(path, *, rate: int = ANALYSIS_RATE) -> tuple[Iterator[np.ndarray], float]:
    """Open `path`'s first audio stream → (mono float32 chunks at `rate`, start time in seconds).

    The start time is the first decoded frame's pts on the container clock, the clock the video's pts
    use, so an envelope built from a file's own soundtrack lines up with its frames.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"audio file not found: {p}")
    if not p.is_file():
        raise InputError(f"not an audio file: {p}")
    container = open_media(p, "audio")
    stream = container.streams.audio[0]
    frames = _decoded(container, stream, p.name)
    first = next(frames, None)
    if first is None:
        container.close()
        raise InputError(f"{p.name}: no audio could be decoded")
    t0 = float(first.pts * first.time_base) if first.pts is not None and first.time_base else 0.0
    return _resampled(container, first, frames, rate), t0


def audio_duration(path) -> float:
    """Seconds of `path`'s first audio stream, after checking that it decodes (a file that is not audio, or
    whose audio does not decode, is one `InputError` line). From the container's header where it says,
    else from the last packet's end."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"audio file not found: {p}" if not p.exists() else f"not an audio file: {p}")
    container = open_media(p, "audio")
    try:
        stream = container.streams.audio[0]
        if next(_decoded(container, stream, p.name), None) is None:
            raise InputError(f"{p.name}: no audio could be decoded")
        if stream.duration is not None and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            container.seek(0)
            ends = [float((pk.pts + (pk.duration or 0)) * pk.time_base) for pk in container.demux(stream)
                    if pk.pts is not None]
            seconds = max(ends, default=0.0)
    except av.FFmpegError as e:
        raise InputError(f"cannot decode the audio of {p.name} ({short_error(e)})") from e
    finally:
        container.close()
    if not seconds > 0:
        raise InputError(f"{p.name}: the audio lasts no time")
    return seconds


def _decoded(container, stream, name: str):
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as e:
            log.warning("%s: audio ends early, file looks truncated or damaged (%s)", name, short_error(e))
            break
        try:
            yield from packet.decode()
        except av.FFmpegError as e:
            log.warning("%s: skipping undecodable audio packet (%s)", name, short_error(e))
    try:
        yield from stream.codec_context.decode(None)
    except av.FFmpegError:
        pass


def _resampled(container, first, frames, rate: int) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    try:
        # NaN and ±inf samples (float PCM from a broken file) are silence and full scale, as the encoder gets them.
        for frame in _chain(first, frames):
            for out in resampler.resample(frame):
                yield np.nan_to_num(out.to_ndarray().reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
        for out in resampler.resample(None):
            yield np.nan_to_num(out.to_ndarray().reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
    finally:
        container.close()


def _chain(first, rest):
    yield first
    yield from rest


# ------------------------------------------------------------------------------------------- features

def spectral_features(chunks: Iterable[np.ndarray], *, block: int = _BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(rms, flux) per hop of a mono signal at `ANALYSIS_RATE`, frames centred on k·HOP.

    flux = mean over log bands of max(0, log1p(g·P_k) − log1p(g·P_{k−1})): half-wave rectified, so only
    rises in energy count. The STFT runs block by block; hop k sees exactly the samples a one-shot STFT
    would give it.
    """
    carry = np.zeros(N_FFT // 2, np.float32)  # centre padding, as librosa's center=True
    prev = np.zeros(_BANDS.shape[1], np.float32)
    rms, flux, pending, size = [], [], [], 0

    def run(buf: np.ndarray) -> np.ndarray:
        nonlocal prev
        n = (len(buf) - N_FFT) // HOP + 1 if len(buf) >= N_FFT else 0
        if n <= 0:
            return buf
        frames = sliding_window_view(buf, N_FFT)[::HOP][:n]
        rms.append(np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)))
        mag = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) * (2.0 / _WINDOW.sum())
        s = np.log1p(LOG_GAIN * (np.square(mag) @ _BANDS))
        d = np.diff(s, axis=0, prepend=prev[None])
        flux.append(np.maximum(d, 0.0).mean(axis=1))
        prev = s[-1]
        return buf[n * HOP:]

    for chunk in chunks:
        pending.append(np.asarray(chunk, np.float32).reshape(-1))
        size += len(pending[-1])
        if size >= block:
            carry = run(np.concatenate([carry, *pending]))
            pending, size = [], 0
    run(np.concatenate([carry, *pending, np.zeros(N_FFT // 2, np.float32)]))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return cat(rms), cat(flux)


def follow(x: np.ndarray, rate: float, attack: float, release: float) -> np.ndarray:
    """One-pole envelope follower: rises with time constant `attack`, falls with `release` (seconds).

    A step from 0 to 1 reaches 1 − 1/e after `attack` seconds; a step down falls to 1/e after `release`.
    A time constant of 0 follows the input exactly.
    """
    up = 1.0 - np.exp(-1.0 / (attack * rate)) if attack > 0 else 1.0
    down = 1.0 - np.exp(-1.0 / (release * rate)) if release > 0 else 1.0
    out = np.empty(len(x), np.float64)
    y = 0.0
    for i, v in enumerate(np.asarray(x, np.float64).tolist()):  # a switching filter: no lfilter form
        y += (up if v > y else down) * (v - y)
        out[i] = y
    return out


def normalise(x: np.ndarray) -> np.ndarray:
    """Scale to 0..1 by the 99th percentile (floored at 2 % of the peak), clipping what lies above."""
    x = np.maximum(np.asarray(x, np.float64), 0.0)
    if not len(x) or x.max() <= 0:
        return np.zeros(len(x))
    scale = max(np.percentile(x, NORM_PERCENTILE), SPARSE_FLOOR * x.max())
    return np.clip(x / scale, 0.0, 1.0)


def estimate_tempo(onset: np.ndarray, rate: float = FRAME_RATE, *, lo: float = 40.0, hi: float = 240.0,
                   prior: float = 120.0) -> float:
    """Global tempo (BPM) from the onset envelope's autocorrelation.

    The autocorrelation peaks at the beat period and at all its multiples; a log-normal prior (one octave
    wide, around 120 BPM, as librosa does) picks among them, and a parabola through the peak gives the
    sub-hop period that a ±2 BPM answer needs (one hop is ±2.8 BPM at 120).
    """
    o = np.asarray(onset, np.float64) - np.mean(onset)
    n = len(o)
    spec = np.fft.rfft(o, 2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:n] / np.arange(n, 0, -1)  # unbiased: later lags see fewer pairs
    lags = np.arange(n)
    lo_lag, hi_lag = int(np.floor(60 * rate / hi)), int(np.ceil(60 * rate / lo))
    hi_lag = min(hi_lag, n // 2)  # a period needs two repeats in the clip to be seen
    if hi_lag - lo_lag < 3:
        return prior
    cand = lags[lo_lag:hi_lag + 1]
    weight = np.exp(-0.5 * np.log2(60 * rate / np.maximum(cand, 1) / prior) ** 2)
    score = np.maximum(ac[lo_lag:hi_lag + 1], 0.0) * weight
    k = int(np.argmax(score))
    if score[k] <= 0:
        return prior
    lag = float(cand[k])
    if 0 < k < len(score) - 1:
        a, b, c = score[k - 1], score[k], score[k + 1]
        den = a - 2 * b + c
        if den < 0:
            lag += 0.5 * (a - c) / den
    return float(60 * rate / lag)


def track_beats(onset: np.ndarray, bpm: float, rate: float = FRAME_RATE, tightness: float = 100.0) -> np.ndarray:
    """Beat hops by dynamic programming (Ellis 2007, as librosa's beat_track): each hop's score is its
    onset strength plus the best earlier beat's score, penalised by tightness·log²(gap / period).

    Candidates lie between half a period and two periods back, so a whole half-period of hops can be
    scored at once from already final scores.
    """
    o = np.asarray(onset, np.float64)
    n = len(o)
    if n == 0 or o.max() <= 0:
        return np.zeros(0, np.int64)
    period = 60.0 * rate / bpm
    local = o / (o.std() + 1e-12)
    near, far = max(1, round(period / 2)), max(2, round(2 * period))
    gaps = np.arange(far, near - 1, -1)  # candidate offsets back from the hop, oldest first
    penalty = -tightness * np.log(gaps / period) ** 2
    cum = np.concatenate([np.full(far, -np.inf), np.zeros(n)])  # `far` hops of "no beat yet" in front
    link = np.full(n, -1, np.int64)
    for s in range(0, n, near):
        idx = np.arange(s, min(n, s + near))
        win = sliding_window_view(cum, far - near + 1)[idx]  # cum[i − far .. i − near] in padded coords
        scores = win + penalty
        best = np.argmax(scores, axis=1)
        top = scores[np.arange(len(idx)), best]
        has = np.isfinite(top) & (top > 0)
        cum[idx + far] = local[idx] + np.where(has, top, 0.0)
        link[idx] = np.where(has, idx - gaps[best], -1)
    c = cum[far:]
    peaks = np.flatnonzero((c[1:-1] > c[:-2]) & (c[1:-1] >= c[2:])) + 1
    if not len(peaks):
        return np.zeros(0, np.int64)
    last = peaks[c[peaks] >= 0.5 * np.median(c[peaks])][-1]
    beats = [int(last)]
    while link[beats[-1]] >= 0:
        beats.append(int(link[beats[-1]]))
    beats = np.array(beats[::-1], np.int64)
    # The chain's ends run on past the music (its score only grows along the chain); as librosa does,
    # drop leading and trailing beats that fall on weak onsets.
    strong = np.flatnonzero(local[beats] >= 0.5 * np.sqrt(np.mean(local[beats] ** 2)))
    return beats[strong[0]:strong[-1] + 1] if len(strong) else beats[:0]


def analyse(chunks: Iterable[np.ndarray], feature: str = "onset", *, attack: float = 0.01, release: float = 0.2,
            t0: float = 0.0) -> Envelope:
    """The envelope of a mono signal at `ANALYSIS_RATE` (given as chunks): feature → follower → 0..1."""
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
    rms, flux = spectral_features(chunks)
    tempo = None
    if not len(rms) or rms.max() < SILENCE_RMS:
        log.warning("the soundtrack is silent; the reactive parameter stays at its timeline value")
        return Envelope(np.zeros(len(rms)), FRAME_RATE, t0, feature, None)
    if feature == "rms":
        raw = rms
    elif feature == "onset":
        raw = flux
    else:
        tempo = estimate_tempo(flux)
        raw = np.zeros(len(flux))
        raw[track_beats(flux, tempo)] = 1.0
        log.info("beat: %.1f BPM, %d beats", tempo, int(raw.sum()))
    values = normalise(follow(raw, FRAME_RATE, attack, release))
    return Envelope(values, FRAME_RATE, t0 + (ONSET_LAG if feature != "rms" else 0.0), feature, tempo)


def envelope(path, feature: str = "onset", *, attack: float = 0.01, release: float = 0.2) -> Envelope:
    """Decode `path`'s first audio stream and analyse it (see `analyse`). Bad audio → `InputError`."""
    chunks, t0 = read_audio(path)
    try:
        return analyse(chunks, feature, attack=attack, release=release, t0=t0)
    except av.FFmpegError as e:
        raise InputError(f"cannot decode the audio of {Path(path).name} ({short_error(e)})") from e


__all__ = ["FEATURES", "ANALYSIS_RATE", "FRAME_RATE", "Envelope", "frame_times", "read_audio", "audio_duration",
           "spectral_features", "follow", "normalise", "estimate_tempo", "track_beats", "analyse", "envelope"]
