"""Add and read 360° metadata (Spherical Video V1 XMP and V2 st3d/sv3d) in MP4 files, in pure Python.

PyAV cannot set spherical side data on an output stream, so the encoder writes a plain MP4 and this
module rewrites its `moov` afterwards. Only `moov` is held in memory; every other top-level box
(notably `mdat`, which can be GBs) is streamed from the source in chunks. Byte layouts and the order
FFmpeg insists on (svhd, proj, prhd, equi) are documented in vr360.md §1.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable
from xml.sax.saxutils import escape

from stages.common import InputError

log = logging.getLogger(__name__)

V1_UUID = bytes.fromhex("ffcc8263f8554a938814587a02521fdd")
STEREO_MODES = {"mono": 0, "top-bottom": 1, "left-right": 2}
_ST3D_NAMES = {0: "mono", 1: "top-bottom", 2: "left-right", 3: "custom", 4: "right-left"}
# Only the path down to the sample entries and chunk offsets is parsed; everything else in moov
# stays an opaque leaf so unknown boxes survive byte for byte.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
_VIDEO_ENTRIES = {
    b"avc1", b"avc3", b"hvc1", b"hev1", b"vp08", b"vp09", b"av01", b"mp4v",
    b"dvh1", b"dvhe", b"dva1", b"dvav", b"vvc1", b"vvi1", b"jpeg", b"mjpa", b"s263",
}
_VISUAL_ENTRY_FIXED = 78  # SampleEntry(8) + VisualSampleEntry fields(70), after the box header
_U32_MAX = 0xFFFFFFFF
_COPY_CHUNK = 8 << 20


@dataclass
class Box:
    """One MP4 box. Leaves keep their payload; containers keep a fixed prefix plus children."""

    type: bytes
    data: bytes = b""
    prefix: bytes = b""
    children: list[Box] | None = None
    tail: bytes = b""  # unparseable bytes after the last child (some muxers pad entries with zeros)

    def payload_size(self) -> int:
        if self.children is None:
            return len(self.data)
        return len(self.prefix) + sum(c.size() for c in self.children) + len(self.tail)

    def size(self) -> int:
        n = 8 + self.payload_size()
        return n if n <= _U32_MAX else n + 8

    def to_bytes(self) -> bytes:
        n = 8 + self.payload_size()
        if n <= _U32_MAX:
            head = struct.pack(">I4s", n, self.type)
        else:
            head = struct.pack(">I4sQ", 1, self.type, n + 8)
        if self.children is None:
            return head + self.data
        return b"".join([head, self.prefix, *(c.to_bytes() for c in self.children), self.tail])

    def find(self, kind: bytes) -> list[Box]:
        return [c for c in (self.children or []) if c.type == kind]


@dataclass
class _TopBox:
    type: bytes
    offset: int
    size: int
    moov: Box | None = field(default=None, repr=False)


def _split_header(buf: bytes, pos: int, end: int) -> tuple[bytes, int, int]:
    """Return (type, header length, total size) of the box at buf[pos:]."""
    if end - pos < 8:
        raise ValueError(f"truncated box header at byte {pos}")
    size, kind = struct.unpack_from(">I4s", buf, pos)
    head = 8
    if size == 1:
        if end - pos < 16:
            raise ValueError(f"truncated large-size header at byte {pos}")
        size = struct.unpack_from(">Q", buf, pos + 8)[0]
        head = 16
    elif size == 0:
        size = end - pos
    if kind == b"uuid":
        head += 16
    if size < head or pos + size > end:
        raise ValueError(f"box {kind!r} at byte {pos} has impossible size {size}")
    return kind, head, size


def parse_boxes(buf: bytes, pos: int = 0, end: int | None = None) -> list[Box]:
    """Parse buf[pos:end] as a sequence of boxes, descending only into the containers we edit."""
    end = len(buf) if end is None else end
    out = []
    while pos < end:
        kind, head, size = _split_header(buf, pos, end)
        # uuid boxes keep their 16-byte extended type as the start of the payload.
        body_start = pos + (head - 16 if kind == b"uuid" else head)
        out.append(_parse_one(kind, buf, body_start, pos + size))
        pos += size
    return out


def _parse_children(kind: bytes, buf: bytes, start: int, end: int, skip: int) -> Box:
    box = Box(kind, prefix=buf[start:start + skip], children=[])
    pos = start + skip
    while pos < end:
        if end - pos < 8:
            box.tail = buf[pos:end]
            break
        try:
            k, head, size = _split_header(buf, pos, end)
        except ValueError:
            if kind in _CONTAINERS:
                raise
            box.tail = buf[pos:end]
            break
        body = pos + (head - 16 if k == b"uuid" else head)
        box.children.append(_parse_one(k, buf, body, pos + size))
        pos += size
    return box


def _parse_one(kind: bytes, buf: bytes, start: int, end: int) -> Box:
    if kind in _CONTAINERS:
        return _parse_children(kind, buf, start, end, 0)
    if kind == b"stsd":
        return _parse_children(kind, buf, start, end, 8)  # version/flags + entry_count
    if kind in _VIDEO_ENTRIES and end - start >= _VISUAL_ENTRY_FIXED:
        return _parse_children(kind, buf, start, end, _VISUAL_ENTRY_FIXED)
    return Box(kind, data=buf[start:end])


def _read_top_level(f: BinaryIO) -> list[_TopBox]:
    f.seek(0, os.SEEK_END)
    file_size = f.tell()
    pos, boxes = 0, []
    while pos < file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise ValueError(f"truncated box header at byte {pos}")
        size, kind = struct.unpack_from(">I4s", head)
        if size == 1:
            if len(head) < 16:
                raise ValueError(f"truncated large-size header at byte {pos}")
            size = struct.unpack_from(">Q", head, 8)[0]
        elif size == 0:
            size = file_size - pos
        if size < 8 or pos + size > file_size:
            raise ValueError(f"top-level box {kind!r} at byte {pos} has impossible size {size}")
        boxes.append(_TopBox(kind, pos, size))
        pos += size
    return boxes


def _load(f: BinaryIO, path: Path) -> tuple[list[_TopBox], _TopBox]:
    try:
        top = _read_top_level(f)
    except ValueError as e:
        raise InputError(f"{path}: not a readable MP4 ({e})") from None
    moovs = [b for b in top if b.type == b"moov"]
    if len(moovs) != 1:
        raise InputError(f"{path}: expected one moov box, found {len(moovs)}")
    if any(b.type in (b"moof", b"sidx") for b in top):
        raise InputError(f"{path}: fragmented MP4 is not supported for 360° metadata injection")
    moov_top = moovs[0]
    f.seek(moov_top.offset)
    buf = f.read(moov_top.size)
    moov_top.moov = parse_boxes(buf)[0]
    if moov_top.moov.find(b"mvex"):
        raise InputError(f"{path}: fragmented MP4 (mvex) is not supported for 360° metadata injection")
    return top, moov_top


def _handler(trak: Box) -> bytes:
    for mdia in trak.find(b"mdia"):
        for hdlr in mdia.find(b"hdlr"):
            if len(hdlr.data) >= 12:
                return hdlr.data[8:12]
    return b""


def _video_traks(moov: Box) -> list[Box]:
    return [t for t in moov.find(b"trak") if _handler(t) == b"vide"]


def _walk(box: Box, path: tuple[bytes, ...]) -> list[Box]:
    """All descendants reached by following the box types in `path`."""
    level = [box]
    for kind in path:
        level = [c for b in level for c in b.find(kind)]
    return level


def _sample_entries(trak: Box) -> list[Box]:
    return [e for stsd in _walk(trak, (b"mdia", b"minf", b"stbl", b"stsd")) for e in stsd.children or []]


def _full_box(kind: bytes, payload: bytes) -> Box:
    return Box(kind, data=b"\0\0\0\0" + payload)


def _v2_boxes(stereo: str, software: str) -> list[Box]:
    st3d = _full_box(b"st3d", bytes([STEREO_MODES[stereo]]))
    svhd = _full_box(b"svhd", software.encode() + b"\0")
    prhd = _full_box(b"prhd", struct.pack(">iii", 0, 0, 0))  # yaw, pitch, roll: 16.16 degrees
    equi = _full_box(b"equi", struct.pack(">IIII", 0, 0, 0, 0))  # no cropping: full 360x180
    proj = Box(b"proj", children=[prhd, equi])
    return [st3d, Box(b"sv3d", children=[svhd, proj])]


def _v1_box(stereo: str, software: str) -> Box:
    ns = "GSpherical"
    tags = [("Spherical", "true"), ("Stitched", "true"), ("StitchingSoftware", escape(software)),
            ("ProjectionType", "equirectangular")]
    if stereo != "mono":
        tags.append(("StereoMode", stereo))
    xml = (
        '<?xml version="1.0"?><rdf:SphericalVideo\n'
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"\n'
        'xmlns:GSpherical="http://ns.google.com/videos/1.0/spherical/">'
        + "".join(f"<{ns}:{k}>{v}</{ns}:{k}>" for k, v in tags)
        + "</rdf:SphericalVideo>"
    )
    return Box(b"uuid", data=V1_UUID + xml.encode())


def _tag_moov(moov: Box, stereo: str, software: str, path: Path, v1: bool, v2: bool) -> None:
    traks = _video_traks(moov)
    if not traks:
        raise InputError(f"{path}: no video track to tag as 360°")
    for trak in traks:
        entries = [e for e in _sample_entries(trak) if e.children is not None]
        if not entries:
            raise ValueError(f"{path}: video track has no recognised visual sample entry")
        for entry in entries:
            # Idempotent: drop earlier tags so re-running (or re-tagging a different layout) is safe.
            entry.children = [c for c in entry.children if c.type not in (b"st3d", b"sv3d")]
            if v2:
                entry.children.extend(_v2_boxes(stereo, software))
        trak.children = [c for c in trak.children if not (c.type == b"uuid" and c.data[:16] == V1_UUID)]
        if v1:
            trak.children.append(_v1_box(stereo, software))


def shift_chunk_offsets(stbl: Box, shift: Callable[[int], int], originals: list[list[int]]) -> bool:
    """Rewrite every stco/co64 in `stbl` as shift(original offset); returns True if one became co64.

    `originals` holds the offsets as read from the source (one list per stco/co64, in order), so
    repeated passes never shift twice. An stco whose shifted offset passes 2^32-1 is widened to co64.
    """
    promoted = False
    tables = [c for c in stbl.children or [] if c.type in (b"stco", b"co64")]
    for box, offs in zip(tables, originals, strict=True):
        new = [shift(o) for o in offs]
        if box.type == b"stco" and new and max(new) > _U32_MAX:
            box.type, promoted = b"co64", True
        fmt = "I" if box.type == b"stco" else "Q"
        box.data = box.data[:4] + struct.pack(f">I{len(new)}{fmt}", len(new), *new)
    return promoted


def read_chunk_offsets(stbl: Box) -> list[list[int]]:
    out = []
    for box in stbl.children or []:
        if box.type not in (b"stco", b"co64"):
            continue
        (count,) = struct.unpack_from(">I", box.data, 4)
        fmt = "I" if box.type == b"stco" else "Q"
        if 8 + count * struct.calcsize(">" + fmt) > len(box.data):
            raise ValueError(f"{box.type.decode()} table is truncated")
        out.append(list(struct.unpack_from(f">{count}{fmt}", box.data, 8)))
    return out


def _relayout(top: list[_TopBox], moov_top: _TopBox) -> None:
    """Fix chunk offsets for the grown moov; loops because widening stco to co64 grows it again."""
    moov = moov_top.moov
    stbls = _walk(moov, (b"trak", b"mdia", b"minf", b"stbl"))
    originals = [read_chunk_offsets(s) for s in stbls]
    old_starts = [b.offset for b in top]
    while True:
        new_starts, pos = [], 0
        for b in top:
            new_starts.append(pos)
            pos += moov.size() if b is moov_top else b.size
        deltas = [n - o for n, o in zip(new_starts, old_starts, strict=True)]

        def shift(off: int, deltas: list[int] = deltas) -> int:
            # Data moves with the top-level box that contains it (normally the mdat).
            return off + deltas[max(0, bisect_right(old_starts, off) - 1)]

        promoted = False
        for stbl, orig in zip(stbls, originals, strict=True):
            promoted |= shift_chunk_offsets(stbl, shift, orig)
        if not promoted:
            return


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int, size: int) -> None:
    src.seek(offset)
    while size > 0:
        chunk = src.read(min(_COPY_CHUNK, size))
        if not chunk:
            raise ValueError("source file ended early while copying")
        dst.write(chunk)
        size -= len(chunk)


def inject_spherical(
    src: Path, dst: Path, *, stereo: str = "mono", software: str = "deepdream-video",
    v1: bool = True, v2: bool = True,
) -> None:
    """Write dst = src plus V2 (st3d + sv3d/equi) and V1 (uuid XMP) equirectangular 360° metadata.

    Existing tags of both versions are always removed first; v1/v2 choose which are written back
    (both by default, since players differ in which one they read). src and dst may be the same path:
    the result goes to a temporary file that replaces dst at the end.
    """
    src, dst = Path(src), Path(dst)
    if stereo not in STEREO_MODES:
        raise InputError(f"stereo must be one of {', '.join(STEREO_MODES)}, got {stereo!r}")
    if "\0" in software:
        raise ValueError("software name must not contain NUL")
    tmp = dst.with_name(dst.name + ".spherical-tmp")
    with open(src, "rb") as f:
        top, moov_top = _load(f, src)
        old_size = moov_top.size
        _tag_moov(moov_top.moov, stereo, software, src, v1, v2)
        _relayout(top, moov_top)
        try:
            with open(tmp, "wb") as out:
                for b in top:
                    if b is moov_top:
                        out.write(moov_top.moov.to_bytes())
                    else:
                        _copy_range(f, out, b.offset, b.size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, dst)
    order = [b.type.decode("latin-1") for b in top]
    log.info("tagged %s as 360° %s (moov %d -> %d bytes, layout %s)", dst, stereo, old_size,
             moov_top.moov.size(), "/".join(order))


def _parse_v1(xml: str) -> dict:
    def tag(name: str) -> str | None:
        m = re.search(rf"<GSpherical:{name}>\s*([^<]*?)\s*</GSpherical:{name}>", xml, re.IGNORECASE)
        return m.group(1) if m else None

    return {"stereo": tag("StereoMode") or "mono", "projection": tag("ProjectionType")}


def _parse_v2(entry: Box) -> dict | None:
    sv3d = entry.find(b"sv3d")
    if not sv3d:
        return None
    kids = parse_boxes(sv3d[0].data)
    projection = None
    for proj in (k for k in kids if k.type == b"proj"):
        types = [b.type for b in parse_boxes(proj.data)]
        projection = ("equirect" if b"equi" in types else "cubemap" if b"cbmp" in types
                      else "mesh" if b"mshp" in types else None)
    st3d = entry.find(b"st3d")
    mode = st3d[0].data[4] if st3d and len(st3d[0].data) >= 5 else 0
    return {"stereo": _ST3D_NAMES.get(mode, f"unknown({mode})"), "projection": projection}


def read_spherical(path: Path) -> dict:
    """Report the 360° metadata of the first video track (for tests and diagnostics)."""
    path = Path(path)
    with open(path, "rb") as f:
        top, moov_top = _load(f, path)
    result = {"v2": None, "v1": None, "top_level": [b.type.decode("latin-1") for b in top]}
    traks = _video_traks(moov_top.moov)
    if not traks:
        return result
    for entry in _sample_entries(traks[0]):
        if entry.children is not None and result["v2"] is None:
            result["v2"] = _parse_v2(entry)
    for uuid in traks[0].find(b"uuid"):
        if uuid.data[:16] == V1_UUID:
            result["v1"] = _parse_v1(uuid.data[16:].decode("utf-8", "replace"))
    return result
