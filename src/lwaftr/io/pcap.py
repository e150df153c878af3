"""Classic libpcap files (Ethernet link type) in and out, through dpkt."""
from __future__ import annotations

from pathlib import Path

import dpkt


def read_frames(path: str | Path | None) -> list[bytes]:
    """All frames of a pcap file; ``None`` reads as no frames."""
    if path is None:
        return []
    with open(path, "rb") as fh:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(fh)]


def write_frames(path: str | Path, frames: list[bytes]) -> None:
    """Write ``frames`` (an empty file with just the header if none)."""
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB, snaplen=65535)
        for i, f in enumerate(frames):
            w.writepkt(f, ts=float(i))
