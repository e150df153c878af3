"""Capture files in and out: every pcap and pcapng read or written goes through here.

Reading takes classic pcap (either byte order, micro- or nanosecond
timestamps; parsed here, so a record cut short is seen as such) and pcapng
(through ``dpkt.pcapng.Reader``), Ethernet link type only.  Writing gives
classic little-endian microsecond pcap.  Whatever is wrong with a file (missing,
unreadable, not a capture, another link type, a record cut short) raises
:class:`CaptureError`, whose ``str()`` is ``FILE: reason``.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import dpkt

DLT_EN10MB = 1
#: Magic numbers of classic pcap as read with "<I": (byte order, timestamp divisor).
_PCAP_MAGIC = {0xA1B2C3D4: ("<", 1e6), 0xD4C3B2A1: (">", 1e6),
               0xA1B23C4D: ("<", 1e9), 0x4D3CB2A1: (">", 1e9)}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
#: Larger records than this are not frames (Linux's largest snapshot length is 256 KiB).
MAX_RECORD = 1 << 18
_LINKTYPES = {0: "BSD loopback", 101: "raw IP", 113: "Linux cooked (SLL)", 127: "802.11 radiotap",
              228: "raw IPv4", 229: "raw IPv6", 276: "Linux cooked v2 (SLL2)"}


class CaptureError(Exception):
    """A capture file cannot be read or written; ``str()`` is ``FILE: reason``.

    ``frames``: for a file whose last record is cut short, the frames read
    before it (else None)."""

    def __init__(self, path: str | Path, reason: str, frames: list[bytes] | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.frames = frames


def _linktype(path: str | Path, dlt: int) -> None:
    if dlt != DLT_EN10MB:
        name = _LINKTYPES.get(dlt, "not Ethernet")
        raise CaptureError(path, f"link type {dlt} ({name}); only Ethernet (1) captures are read")


def _truncated(path: str | Path, frames: list[bytes]) -> CaptureError:
    n = len(frames)
    return CaptureError(path, f"truncated: the last record is cut short; {n} frame{'s' if n != 1 else ''} "
                              f"read before it", frames)


def _read_pcap(path: str | Path, fh: BinaryIO, head: bytes) -> list[bytes]:
    order, _ = _PCAP_MAGIC[struct.unpack("<I", head[:4])[0]]
    if len(head) < 24:
        raise CaptureError(path, f"truncated: the pcap file header is {len(head)} bytes of 24")
    _linktype(path, struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF)
    rec = struct.Struct(order + "IIII")
    frames: list[bytes] = []
    while True:
        hdr = fh.read(16)
        if not hdr:
            return frames
        if len(hdr) < 16:
            raise _truncated(path, frames)
        _, _, caplen, _ = rec.unpack(hdr)
        if caplen > MAX_RECORD:
            raise CaptureError(path, f"record {len(frames) + 1} claims {caplen} bytes (more than "
                                     f"{MAX_RECORD}): not a valid pcap file")
        data = fh.read(caplen)
        if len(data) < caplen:
            raise _truncated(path, frames)
        frames.append(data)


def _read_pcapng(path: str | Path, fh: BinaryIO) -> list[bytes]:
    try:
        reader = dpkt.pcapng.Reader(fh)
    except (ValueError, dpkt.UnpackError, struct.error) as e:
        raise CaptureError(path, f"not a valid pcapng file ({e})") from None
    _linktype(path, reader.idb.linktype)
    frames: list[bytes] = []
    try:
        for _, buf in reader:
            frames.append(bytes(buf))
    except (dpkt.NeedData, struct.error):
        raise _truncated(path, frames) from None
    except (ValueError, dpkt.UnpackError) as e:
        raise CaptureError(path, f"malformed pcapng block after {len(frames)} frames ({e})") from None
    return frames


def read_frames(path: str | Path | None) -> list[bytes]:
    """All frames of a pcap or pcapng file; ``None`` reads as no frames."""
    if path is None:
        return []
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
            if len(head) >= 4 and struct.unpack("<I", head[:4])[0] in _PCAP_MAGIC:
                return _read_pcap(path, fh, head)
            if head[:4] == _PCAPNG_SHB:
                fh.seek(0)
                return _read_pcapng(path, fh)
    except OSError as e:
        raise CaptureError(path, f"cannot read: {e.strerror or e}") from None
    if not head:
        raise CaptureError(path, "empty file, not a pcap or pcapng capture")
    raise CaptureError(path, f"not a pcap or pcapng file (it starts with {head[:4].hex(' ')})")


class PcapWriter:
    """A classic pcap file written frame by frame (Ethernet, microseconds)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self.fh = open(path, "wb")
            self._w = dpkt.pcap.Writer(self.fh, linktype=dpkt.pcap.DLT_EN10MB, snaplen=65535)
        except OSError as e:
            raise CaptureError(path, f"cannot write: {e.strerror or e}") from None

    def write(self, frame: bytes, ts: float) -> None:
        try:
            self._w.writepkt(frame, ts=ts)
        except OSError as e:
            raise CaptureError(self.path, f"cannot write: {e.strerror or e}") from None

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def write_frames(path: str | Path, frames: list[bytes]) -> None:
    """Write ``frames`` (an empty file with just the header if none)."""
    w = PcapWriter(path)
    try:
        for i, f in enumerate(frames):
            w.write(f, float(i))
    finally:
        w.close()
