"""Bulk conversion and validation of binding-table columns, shared by loaders.

Every binding-table source (``snabb-softwire-v3`` files, the text
binding-table format) ends with the same columns of leaf strings, one entry
per softwire.  They are converted here in bulk (C-speed joins and numpy), and
the cross-softwire rules are checked with numpy sorts:

* ``psid_length + reserved_ports_bit_count <= 16``;
* ``psid < 2 ** psid_length``;
* no two softwires with the same (IPv4, PSID);
* all softwires of one IPv4 address share ``psid_length`` and
  ``reserved_ports_bit_count`` (else their port sets overlap);
* at most 65536 distinct BR addresses.

A failed bulk conversion raises :class:`Reject` with the index of the first
bad value; the caller turns it into a :class:`ConfigError` at the right place.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from lwaftr.config.errors import ConfigError

__all__ = ["Reject", "Names", "uint", "ipv4", "ipv6", "pton4", "pton6", "first_failure", "packed",
           "ints", "optional_ints", "br_index", "fmt4", "check_port_sets"]

_INT_RE = re.compile(r"\+?[0-9]+")
pton4 = partial(socket.inet_pton, socket.AF_INET)
pton6 = partial(socket.inet_pton, socket.AF_INET6)


def uint(bits: int, lo: int = 0, hi: int | None = None) -> Callable[[str], int]:
    """A converter str -> int in ``lo..hi`` (default the full uintBITS range);
    ValueError with a message on bad input."""
    hi = (1 << bits) - 1 if hi is None else hi
    name = f"uint{bits}"

    def conv(s: str) -> int:
        if not _INT_RE.fullmatch(s):
            raise ValueError(f"expected {name}, got {s!r}")
        v = int(s)
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return v
    return conv


def ipv4(s: str) -> bytes:
    """Dotted-quad text -> 4 wire bytes; ValueError on bad input."""
    try:
        return pton4(s)
    except (OSError, ValueError):
        raise ValueError(f"bad IPv4 address {s!r}") from None


def ipv6(s: str) -> bytes:
    """IPv6 text -> 16 wire bytes; ValueError on bad input."""
    try:
        return pton6(s)
    except (OSError, ValueError):
        raise ValueError(f"bad IPv6 address {s!r}") from None


class Reject(Exception):
    """Value ``index`` of a column failed a bulk conversion."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def first_failure(values: list, conv: Callable) -> int:
    """Index of the first value ``conv`` rejects (there must be one)."""
    for i, v in enumerate(values):
        try:
            conv(v)
        except (OSError, ValueError, TypeError):
            return i
    raise AssertionError("bulk conversion failed but no single value does")


def packed(values: list[str], pton: Callable[[str], bytes]) -> bytes:
    """All addresses in wire form, concatenated; Reject at the first bad one."""
    try:
        return b"".join(map(pton, values))
    except (OSError, ValueError, TypeError):
        raise Reject(first_failure(values, pton)) from None


def ints(values: list[str], bits: int, hi: int) -> np.ndarray:
    """Unsigned decimal strings to int64, each <= hi; Reject at the first bad one."""
    digits = "".join(values)
    if digits.isascii() and digits.isdigit() and all(values):   # the usual case, checked in C
        try:
            arr = np.fromiter(map(int, values), np.int64, len(values))
            if not (arr > hi).any():
                return arr
        except OverflowError:
            pass
    conv = uint(bits, 0, hi)                                    # "+5", or an error somewhere
    try:
        return np.fromiter(map(conv, values), np.int64, len(values))
    except ValueError:
        raise Reject(first_failure(values, conv)) from None


def optional_ints(values: list[str | None], bits: int, hi: int) -> np.ndarray:
    """Like :func:`ints`, absent (None) values are 0."""
    present = [i for i, v in enumerate(values) if v is not None] if values.count(None) < len(values) else []
    out = np.zeros(len(values), np.int64)
    if present:
        try:
            out[present] = ints([values[i] for i in present], bits, hi)
        except Reject as r:
            raise Reject(present[r.index]) from None
    return out


def br_index(brs: list[str]) -> tuple[list[bytes], np.ndarray]:
    """Distinct BR addresses in first-seen order, and each softwire's index into them
    (uint16); Reject at the first bad address, or at the 65537th distinct one."""
    by_text: dict[str, int] = {}
    by_bytes: dict[bytes, int] = {}
    for s in dict.fromkeys(brs):
        try:
            p = pton6(s)
        except (OSError, ValueError, TypeError):
            raise Reject(brs.index(s)) from None
        by_text[s] = by_bytes.setdefault(p, len(by_bytes))
    if len(by_bytes) > 0x10000:
        raise Reject(brs.index(next(s for s, i in by_text.items() if i == 0x10000)))
    index = np.fromiter(map(by_text.__getitem__, brs), np.uint16, len(brs))
    return list(by_bytes), index


def fmt4(v: int) -> str:
    """Host-order IPv4 integer as dotted-quad text."""
    return socket.inet_ntop(socket.AF_INET, int(v).to_bytes(4, "big"))


@dataclass(frozen=True)
class Names:
    """How a source names things in errors: the ``path`` of each check, and the
    words for the two port-set parameters in messages."""
    softwire: str            # duplicate softwires
    psid: str                # psid too large for its length
    reserved: str            # psid-length + reserved bits > 16
    port_set: str            # overlapping port sets
    psid_length_word: str = "psid-length"
    reserved_word: str = "reserved-ports-bit-count"


def check_port_sets(source: str | None, ipv4: np.ndarray, psid: np.ndarray, plen: np.ndarray,
                    rsv: np.ndarray, line: np.ndarray, names: Names) -> None:
    """Per-softwire port-set sanity, duplicates and overlapping port sets (vectorised).

    ``psid``, ``plen`` and ``rsv`` are int64 columns; ``line`` gives each
    softwire's source line for the :class:`ConfigError`.
    """
    def fail(i: int, path: str, msg: str) -> None:
        raise ConfigError(msg, file=source, line=int(line[i]), path=path)

    kw, rw = names.psid_length_word, names.reserved_word
    bad = np.flatnonzero(plen + rsv > 16)
    if bad.size:
        i = int(bad[0])
        fail(i, names.reserved, f"{kw} {plen[i]} + {rw} {rsv[i]} exceeds 16")
    bad = np.flatnonzero(psid >= (np.int64(1) << plen))
    if bad.size:
        i = int(bad[0])
        fail(i, names.psid, f"psid {psid[i]} does not fit in {kw} {plen[i]} (must be < {1 << int(plen[i])})")
    key = (ipv4.astype(np.uint64) << np.uint64(16)) | psid.astype(np.uint64)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    dup = order[1:][sk[1:] == sk[:-1]]
    if dup.size:
        i = int(dup.min())
        first = int(np.flatnonzero(key == key[i])[0])
        fail(i, names.softwire,
             f"duplicate softwire {fmt4(ipv4[i])} psid {psid[i]} (first at line {line[first]})")
    _, first_of, inverse = np.unique(ipv4, return_index=True, return_inverse=True)
    params = (plen << 8) | rsv
    firsts = first_of[inverse.reshape(-1)]
    bad = np.flatnonzero(params != params[firsts])
    if bad.size:
        i = int(bad[0])
        f = int(firsts[i])
        fail(i, names.port_set, f"overlapping port sets for {fmt4(ipv4[i])}: {kw} {plen[i]}, "
             f"{rw} {rsv[i]} here, but {kw} {plen[f]}, {rw} {rsv[f]} at line {line[f]}")
