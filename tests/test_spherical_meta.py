"""360° metadata injection on real MP4s written by PyAV/FFmpeg, checked by decoding them with FFmpeg."""

import struct
from pathlib import Path

import av
import av.sidedata.sidedata as sd
import numpy as np
import pytest

from stages.common import InputError
from stages.vr.spherical_meta import (
    Box,
    inject_spherical,
    parse_boxes,
    read_chunk_offsets,
    read_spherical,
    shift_chunk_offsets,
)

W, H, N_FRAMES = 64, 32, 10
# FFmpeg's AVStereo3DType for what each st3d / StereoMode value must decode to.
AV_STEREO = {"mono": 0, "left-right": 1, "top-bottom": 2}


def _write_mp4(path: Path, *, faststart: bool, audio: bool = False, video: bool = True,
               options: dict | None = None, codec: str = "libx264") -> None:
    opts = dict(options or {})
    if faststart:
        opts["movflags"] = "faststart"
    rng = np.random.default_rng(7)
    with av.open(str(path), "w", options=opts) as out:
        v = a = None
        if video:
            v = out.add_stream(codec, rate=10, options={"preset": "ultrafast"})
            v.width, v.height, v.pix_fmt = W, H, "yuv420p"
            if codec == "libx265":
                v.codec_tag = "hvc1"  # the tag headsets and Apple players want for HEVC
        if audio:
            a = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(N_FRAMES):
            if v:
                img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
                for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(p)
            if a:
                t = (np.arange(4800) + i * 4800) / 48000
                samples = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])
                samples = samples.astype(np.float32)
                af = av.AudioFrame.from_ndarray(samples * 0.3, format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, i * 4800
                for p in a.encode(af):
                    out.mux(p)
        for s in (v, a):
            if s:
                for p in s.encode():
                    out.mux(p)


def _decode(path: Path) -> tuple[list[np.ndarray], list[dict], np.ndarray | None]:
    """Decoded video pixels, each frame's side data {type: raw bytes}, and concatenated audio."""
    frames, side, audio = [], [], None
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            side.append({x.type: bytes(x) for x in f.side_data})
    with av.open(str(path)) as c:
        if c.streams.audio:
            audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return frames, side, audio


def _stereo_type(raw: bytes) -> int:
    return struct.unpack("=i", raw[:4])[0]  # AVStereo3D.type, native-endian int32


def _check_tagged(src: Path, dst: Path, stereo: str, *, v1: bool = True, v2: bool = True) -> dict:
    before, _, audio_before = _decode(src)
    after, side, audio_after = _decode(dst)
    assert len(after) == len(before) == N_FRAMES
    # Pixels equal means every chunk offset still points at the right sample.
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a, b)
    for s in side:
        assert sd.Type.SPHERICAL in s, "FFmpeg did not see the spherical metadata"
        assert struct.unpack("=i", s[sd.Type.SPHERICAL][:4])[0] == 0  # AV_SPHERICAL_EQUIRECTANGULAR
        assert _stereo_type(s[sd.Type.STEREO3D]) == AV_STEREO[stereo]
    if audio_before is not None:
        assert audio_after is not None and np.array_equal(audio_before, audio_after)
    meta = read_spherical(dst)
    assert meta["v2"] == ({"stereo": stereo, "projection": "equirect"} if v2 else None)
    assert meta["v1"] == ({"stereo": stereo, "projection": "equirectangular"} if v1 else None)
    return meta


@pytest.mark.parametrize("faststart", [True, False], ids=["moov-first", "moov-last"])
@pytest.mark.parametrize("stereo", ["mono", "top-bottom", "left-right"])
def test_inject_video_only(tmp_path, faststart, stereo):
    src, dst = tmp_path / "in.mp4", tmp_path / "out_360.mp4"
    _write_mp4(src, faststart=faststart)
    before = read_spherical(src)
    assert before["v1"] is None and before["v2"] is None
    inject_spherical(src, dst, stereo=stereo)
    meta = _check_tagged(src, dst, stereo)
    top = meta["top_level"]
    assert (top.index("moov") < top.index("mdat")) == faststart
    assert dst.stat().st_size > src.stat().st_size


@pytest.mark.parametrize("faststart", [True, False], ids=["moov-first", "moov-last"])
def test_inject_with_audio_track(tmp_path, faststart):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _write_mp4(src, faststart=faststart, audio=True)
    inject_spherical(src, dst, stereo="top-bottom")
    _check_tagged(src, dst, "top-bottom")
    with av.open(str(dst)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_each_version_alone_is_read_by_ffmpeg(tmp_path, which):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _write_mp4(src, faststart=True)
    inject_spherical(src, dst, stereo="left-right", v1=which == "v1", v2=which == "v2")
    _check_tagged(src, dst, "left-right", v1=which == "v1", v2=which == "v2")


def test_hevc_hvc1_sample_entry(tmp_path):
    src, dst = tmp_path / "hevc.mp4", tmp_path / "out.mp4"
    _write_mp4(src, faststart=True, codec="libx265")
    inject_spherical(src, dst, stereo="top-bottom", v1=False)
    _check_tagged(src, dst, "top-bottom", v1=False)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.codec_tag == "hvc1"


def test_reinjection_replaces_tags_in_place(tmp_path):
    src, once = tmp_path / "in.mp4", tmp_path / "once.mp4"
    _write_mp4(src, faststart=True, audio=True)
    inject_spherical(src, once, stereo="mono", software="first")
    size_once = once.stat().st_size
    # Same path in and out, different layout: old tags go, nothing piles up, offsets stay right.
    inject_spherical(once, once, stereo="left-right", software="first")
    assert once.stat().st_size == size_once + len("<GSpherical:StereoMode>left-right</GSpherical:StereoMode>")
    _check_tagged(src, once, "left-right")
    assert not list(tmp_path.glob("*.spherical-tmp"))


def test_large_size_mdat_header(tmp_path):
    src, big, dst = tmp_path / "in.mp4", tmp_path / "big.mp4", tmp_path / "out.mp4"
    _write_mp4(src, faststart=True)
    assert read_spherical(src)["top_level"] == ["ftyp", "moov", "free", "mdat"]
    data = bytearray(src.read_bytes())
    # FFmpeg leaves an 8-byte `free` before mdat exactly so mdat can become a 16-byte large-size box
    # in place; doing that here keeps every offset valid while exercising size == 1.
    pos = data.index(b"free") - 4
    assert struct.unpack(">I", data[pos:pos + 4])[0] == 8
    mdat_size = struct.unpack(">I", data[pos + 8:pos + 12])[0]
    data[pos:pos + 16] = struct.pack(">I4sQ", 1, b"mdat", mdat_size + 8)
    big.write_bytes(bytes(data))
    assert read_spherical(big)["top_level"] == ["ftyp", "moov", "mdat"]
    inject_spherical(big, dst, stereo="mono")
    _check_tagged(src, dst, "mono")


def test_no_video_track_is_input_error(tmp_path):
    src = tmp_path / "audio.mp4"
    _write_mp4(src, faststart=False, audio=True, video=False)
    with pytest.raises(InputError, match="no video track"):
        inject_spherical(src, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_fragmented_mp4_is_input_error(tmp_path):
    src = tmp_path / "frag.mp4"
    _write_mp4(src, faststart=False, options={"movflags": "frag_keyframe+empty_moov"})
    with pytest.raises(InputError, match="fragmented"):
        inject_spherical(src, tmp_path / "out.mp4")


def test_not_an_mp4_is_input_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x10\x00junk" + b"\x00" * 20)
    with pytest.raises(InputError, match="not a readable MP4"):
        inject_spherical(bad, tmp_path / "out.mp4")
    with pytest.raises(InputError, match="stereo must be one of"):
        inject_spherical(bad, tmp_path / "out.mp4", stereo="sideways")


def _stbl(stco: list[int]) -> Box:
    body = struct.pack(f">4xI{len(stco)}I", len(stco), *stco)
    return Box(b"stbl", children=[Box(b"stsz", data=b"\0" * 12), Box(b"stco", data=body)])


def test_stco_promoted_to_co64_when_offsets_overflow():
    offsets = [48, 1000, 2**32 - 100]
    stbl = _stbl(offsets)
    orig = read_chunk_offsets(stbl)
    assert orig == [offsets]
    assert shift_chunk_offsets(stbl, lambda o: o + 200, orig) is True
    co64 = stbl.children[1]
    assert co64.type == b"co64"
    assert read_chunk_offsets(stbl) == [[o + 200 for o in offsets]]
    assert co64.size() == 8 + 8 + 8 * len(offsets)
    # Shifting again starts from the originals, never compounding, and co64 stays co64.
    assert shift_chunk_offsets(stbl, lambda o: o + 300, orig) is False
    assert read_chunk_offsets(stbl) == [[o + 300 for o in offsets]]
    # The serialised parent carries the grown child.
    raw = stbl.to_bytes()
    assert struct.unpack(">I", raw[:4])[0] == len(raw) == stbl.size()


def test_stco_kept_when_offsets_fit():
    stbl = _stbl([48, 4096])
    assert shift_chunk_offsets(stbl, lambda o: o + 613, read_chunk_offsets(stbl)) is False
    assert stbl.children[1].type == b"stco"
    assert read_chunk_offsets(stbl) == [[661, 4709]]


def test_inject_promotes_stco_in_a_moov_first_file(tmp_path):
    # A hand-built moov-first file whose chunk table already sits near 2^32: the growth from the new
    # boxes pushes it over, stco becomes co64, and that growth must be added to the offsets as well.
    hdlr = Box(b"hdlr", data=b"\0" * 8 + b"vide" + b"\0" * 13)
    avc1 = Box(b"avc1", prefix=b"\0" * 78, children=[Box(b"avcC", data=b"\x01")])
    stsd = Box(b"stsd", prefix=struct.pack(">II", 0, 1), children=[avc1])
    offsets = [1000, 2**32 - 10]
    stbl = _stbl(offsets)
    stbl.children.insert(0, stsd)
    trak = Box(b"trak", children=[Box(b"mdia", children=[hdlr, Box(b"minf", children=[stbl])])])
    moov = Box(b"moov", children=[trak])
    ftyp = Box(b"ftyp", data=b"isom\0\0\2\0isom")
    mdat = Box(b"mdat", data=bytes(range(256)) * 4)
    src, dst = tmp_path / "synthetic.mp4", tmp_path / "out.mp4"
    src.write_bytes(ftyp.to_bytes() + moov.to_bytes() + mdat.to_bytes())
    inject_spherical(src, dst, stereo="top-bottom")
    out = dst.read_bytes()
    new_moov = parse_boxes(out)[1]
    assert new_moov.type == b"moov"
    new_stbl = new_moov.find(b"trak")[0].find(b"mdia")[0].find(b"minf")[0].find(b"stbl")[0]
    assert [c.type for c in new_stbl.children][-1] == b"co64"
    growth = new_moov.size() - moov.size()
    assert read_chunk_offsets(new_stbl) == [[o + growth for o in offsets]]
    assert out.endswith(mdat.to_bytes())
    assert len(out) == src.stat().st_size + growth
    meta = read_spherical(dst)
    assert meta["v2"] == {"stereo": "top-bottom", "projection": "equirect"}
    assert meta["v1"]["stereo"] == "top-bottom"
