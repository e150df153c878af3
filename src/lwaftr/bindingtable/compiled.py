"""The compiled binding table: one file, memory-mapped read-only by every worker.

A :class:`BindingTable` is a few flat arrays; this module stores them raw so a
process maps the file instead of parsing the source, and all processes share
one copy through the page cache.  Layout (all integers little-endian)::

    0   8 bytes  magic b"LWAFTRBT"
    8   u32      format version (FORMAT_VERSION)
    12  u32      length L of the JSON header
    16  u32      CRC-32 of the JSON header
    20  u32      0
    24  L bytes  JSON header: count, layout fingerprint, arrays (name, dtype,
                 shape, offset, nbytes), payload offset/size, payload CRC-32,
                 source (name, size, mtime_ns)
    ..  payload: addr_tab, sw_tab, br_tab, each at a 64-byte aligned offset

The ``layout`` fingerprint hashes ``table.py`` (hash function, slot layout):
a table built by other code is never used.  :func:`compile_cached` keeps a
compiled file next to its source (``SOURCE.lwbt``) and rebuilds it when it
is missing, corrupt, of another version/layout, or older than the source.
Files are written to a temporary name and renamed, so a crash never leaves a
half-written file under the real name.
"""
from __future__ import annotations

import inspect
import json
import mmap as _mmap
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lwaftr.bindingtable import table as _table
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.errors import ConfigError
from lwaftr.fileutil import write_atomic
from lwaftr.config.model import Bindings

__all__ = ["MAGIC", "FORMAT_VERSION", "SUFFIX", "CompiledTableError", "Header", "CompileStats", "save",
           "load", "read_header", "layout_fingerprint", "compiled_path", "is_fresh", "compile_file",
           "compile_cached"]

MAGIC = b"LWAFTRBT"
FORMAT_VERSION = 1
SUFFIX = ".lwbt"
ALIGN = 64
_PREFIX = struct.Struct("<8sIIII")
#: name -> (dtype, number of dimensions, fixed trailing shape)
_ARRAYS = {"addr_tab": ("<u8", 1, ()), "sw_tab": ("<u8", 2, (4,)), "br_tab": ("|u1", 2, (16,))}
#: Show progress automatically for sources at least this big on a TTY / anywhere.
PROGRESS_TTY_BYTES = 1 << 20
PROGRESS_ANY_BYTES = 16 << 20


class CompiledTableError(ConfigError):
    """A compiled binding-table file is unreadable, truncated, corrupt, or of
    another format version or table layout."""


@dataclass
class Header:
    """What the JSON header of a compiled file says."""
    version: int
    layout: str
    count: int
    arrays: dict[str, dict[str, Any]]
    payload_offset: int
    payload_size: int
    crc32: int
    source: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def file_size(self) -> int:
        return self.payload_offset + self.payload_size


_layout_cache: list[str] = []


def layout_fingerprint() -> str:
    """Hash of the table-building code; compiled files record it."""
    if not _layout_cache:
        try:
            src = inspect.getsource(_table).encode()
        except (OSError, TypeError):
            src = repr((_table.ADDR_OCCUPIED, _table.SW_OCCUPIED, _table._HASH_MUL)).encode()
        _layout_cache.append(zlib.crc32(src).to_bytes(4, "big").hex())
    return _layout_cache[0]


def compiled_path(source: str | os.PathLike) -> Path:
    """Where :func:`compile_cached` keeps the compiled form of ``source``."""
    p = Path(source)
    return p.with_name(p.name + SUFFIX)


# --- writing -------------------------------------------------------------------------------------

def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def save(table: BindingTable, path: str | os.PathLike, source: dict[str, Any] | None = None,
         progress: Callable[[float], None] | None = None) -> int:
    """Write ``table`` to ``path`` atomically; returns the file size.

    ``source`` (name, size, mtime_ns of the file it came from) is recorded
    for :func:`compile_cached`.  ``progress`` is called with 0..1.
    """
    arrays = {"addr_tab": table.addr_tab, "sw_tab": table.sw_tab, "br_tab": table.br_tab}
    data = {k: np.ascontiguousarray(a, _ARRAYS[k][0]) for k, a in arrays.items()}
    rel, off = {}, 0
    for k, a in data.items():
        off = _align(off)
        rel[k] = off
        off += a.nbytes
    payload_size = _align(off)
    crc, pos = 0, 0
    chunks: list[memoryview | bytes] = []
    for k, a in data.items():
        if rel[k] > pos:
            chunks.append(bytes(rel[k] - pos))
        chunks.append(memoryview(a.reshape(-1)).cast("B"))
        pos = rel[k] + a.nbytes
    chunks.append(bytes(payload_size - pos))
    for c in chunks:
        crc = zlib.crc32(c, crc)
    meta: dict[str, Any] = {
        "version": FORMAT_VERSION, "layout": layout_fingerprint(), "count": int(table.count),
        "arrays": {}, "payload_offset": 0, "payload_size": payload_size, "crc32": crc,
        "source": source, "created": time.time()}
    # The payload offset depends on the header length, which depends on the offsets: iterate.
    start = 0
    while True:
        meta["payload_offset"] = start
        meta["arrays"] = {k: {"dtype": _ARRAYS[k][0], "shape": list(a.shape), "offset": start + rel[k],
                              "nbytes": a.nbytes} for k, a in data.items()}
        js = json.dumps(meta, sort_keys=True).encode("ascii")
        need = _align(_PREFIX.size + len(js))
        if need == start:
            break
        start = need
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(js), zlib.crc32(js), 0) + js
    head += bytes(start - len(head))
    total = start + payload_size
    write_atomic(path, [head] + chunks, fsync=True, progress=progress)
    return total


# --- reading -------------------------------------------------------------------------------------

def _bad(path: str, msg: str) -> CompiledTableError:
    return CompiledTableError(msg, file=path)


def _parse_header(buf: bytes | memoryview, path: str, size: int) -> Header:
    if size < _PREFIX.size:
        if bytes(buf[:min(size, 8)]) != MAGIC[:min(size, 8)]:
            raise _bad(path, "not a compiled binding table (bad magic)")
        raise _bad(path, f"truncated: {size} bytes, shorter than the header")
    magic, version, hlen, hcrc, _ = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise _bad(path, "not a compiled binding table (bad magic)")
    if version != FORMAT_VERSION:
        raise _bad(path, f"format version {version}, this lwaftr reads version {FORMAT_VERSION}")
    if _PREFIX.size + hlen > size:
        raise _bad(path, "truncated: the file ends inside its header")
    js = bytes(buf[_PREFIX.size:_PREFIX.size + hlen])
    if zlib.crc32(js) != hcrc:
        raise _bad(path, "corrupt: header checksum mismatch")
    try:
        m = json.loads(js)
        h = Header(version=m["version"], layout=m["layout"], count=int(m["count"]), arrays=m["arrays"],
                   payload_offset=int(m["payload_offset"]), payload_size=int(m["payload_size"]),
                   crc32=int(m["crc32"]), source=m.get("source"),
                   extra={k: v for k, v in m.items() if k not in Header.__dataclass_fields__})
    except (ValueError, KeyError, TypeError) as e:
        raise _bad(path, f"corrupt: bad header ({e})") from None
    if h.layout != layout_fingerprint():
        raise _bad(path, f"built for another binding-table layout ({h.layout}, "
                         f"this lwaftr uses {layout_fingerprint()})")
    if size < h.file_size:
        raise _bad(path, f"truncated: {size} bytes, the header announces {h.file_size}")
    if size > h.file_size:
        raise _bad(path, f"corrupt: {size - h.file_size} bytes of trailing data")
    _check_arrays(h, path)
    return h


def _check_arrays(h: Header, path: str) -> None:
    if set(h.arrays) != set(_ARRAYS):
        raise _bad(path, f"corrupt: arrays {sorted(h.arrays)}, expected {sorted(_ARRAYS)}")
    end = h.payload_offset + h.payload_size
    for k, (dt, ndim, tail) in _ARRAYS.items():
        a = h.arrays[k]
        shape = tuple(a.get("shape", ()))
        if (a.get("dtype") != dt or len(shape) != ndim or shape[1:] != tail or shape[0] < 1
                or a["nbytes"] != int(np.prod(shape)) * np.dtype(dt).itemsize
                or a["offset"] % 8 or not h.payload_offset <= a["offset"] <= end - a["nbytes"]):
            raise _bad(path, f"corrupt: bad description of {k}: {a}")
    if not 0 <= h.count < h.arrays["sw_tab"]["shape"][0]:
        raise _bad(path, f"corrupt: {h.count} softwires in {h.arrays['sw_tab']['shape'][0]} slots")


def read_header(path: str | os.PathLike) -> Header:
    """The validated header of a compiled file (the payload is not read)."""
    p = str(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(1 << 16)
            if len(head) >= _PREFIX.size:
                hlen = _PREFIX.unpack_from(head, 0)[2]
                if _PREFIX.size + hlen > len(head) and _PREFIX.size + hlen <= size:
                    head += fh.read(_PREFIX.size + hlen - len(head))
    except OSError as e:
        raise _bad(p, f"cannot read: {e}") from None
    return _parse_header(head, p, size)


def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True, private: bool = False) -> BindingTable:
    """Open a compiled binding table.

    ``mmap``: map the file read-only (arrays are not writeable; pages are shared
    with every other process mapping it); else read it into private memory.
    ``private`` (with ``mmap``): map it copy-on-write instead, so the arrays
    are writeable (in-place edits) and a page is copied only when written.
    ``verify``: check the payload CRC-32 (reads every page once).
    Raises :class:`CompiledTableError` on a bad, truncated or corrupt file.
    """
    p = str(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _bad(p, "truncated: empty file")
            if mmap:
                buf: Any = _mmap.mmap(fh.fileno(), 0, access=_mmap.ACCESS_COPY if private else _mmap.ACCESS_READ)
            else:
                buf = bytearray(size)
                if fh.readinto(buf) != size:
                    raise _bad(p, "truncated: short read")
    except OSError as e:
        raise _bad(p, f"cannot read: {e}") from None
    h = _parse_header(memoryview(buf)[:min(size, 1 << 20)], p, size)
    if verify:
        view = memoryview(buf)[h.payload_offset:h.file_size]
        crc = zlib.crc32(view)
        view.release()
        if crc != h.crc32:
            raise _bad(p, "corrupt: payload checksum mismatch")
    arrs = {}
    for k, (dt, _, _) in _ARRAYS.items():
        a = h.arrays[k]
        shape = tuple(a["shape"])
        arrs[k] = np.frombuffer(buf, np.dtype(dt), int(np.prod(shape)), a["offset"]).reshape(shape)
    return BindingTable(arrs["addr_tab"].astype(np.uint64, copy=False),
                        arrs["sw_tab"].astype(np.uint64, copy=False), arrs["br_tab"], h.count)


# --- compiling from a source ---------------------------------------------------------------------

class _Progress:
    """A one-line text bar on a TTY; plain stage lines otherwise; or nothing."""

    def __init__(self, label: str, enabled: bool, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.label = label
        self.stage = ""
        self.t0 = time.perf_counter()
        self._last = -1

    def __call__(self, stage: str, frac: float) -> None:
        if not self.enabled:
            return
        if self.tty:
            pct = int(frac * 100)
            if pct == self._last and stage == self.stage:
                return
            self._last = pct
            bar = "#" * (pct * 30 // 100)
            self.stream.write(f"\r{self.label} [{bar:<30}] {pct:3d}% {stage:<8}")
            self.stream.flush()
        elif stage != self.stage:
            self.stream.write(f"{self.label}: {stage}...\n")
            self.stream.flush()
        self.stage = stage

    def done(self, what: str) -> None:
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        end = f" [{'#' * 30}] 100% " if self.tty else ": "
        self.stream.write(f"{chr(13) if self.tty else ''}{self.label}{end}{what} in {dt:.2f} s\n")
        self.stream.flush()


@dataclass
class CompileStats:
    """What :func:`compile_file` did (seconds per stage, sizes)."""
    softwires: int
    file_size: int
    load_s: float
    build_s: float
    write_s: float

    @property
    def total_s(self) -> float:
        return self.load_s + self.build_s + self.write_s

    @property
    def bytes_per_softwire(self) -> float:
        return self.file_size / max(self.softwires, 1)


def _source_info(path: Path, st: os.stat_result) -> dict[str, Any]:
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _auto_progress(size: int) -> bool:
    return size >= PROGRESS_ANY_BYTES or (size >= PROGRESS_TTY_BYTES and sys.stderr.isatty())


def compile_file(source: str | os.PathLike, loader: Callable[[str], Bindings],
                 out: str | os.PathLike | None = None, progress: bool | None = None
                 ) -> tuple[BindingTable, CompileStats]:
    """Load ``source`` with ``loader``, build its table and save it to ``out``
    (default ``SOURCE.lwbt``), unconditionally; return the table mapped from
    ``out``.  ``progress``: show a bar on stderr (None: only for big sources,
    see PROGRESS_*_BYTES).  OSError if ``out`` cannot be written."""
    table, stats, error = _compile(Path(source), loader, out, progress)
    if error is not None:
        raise error
    return table, stats


def _compile(src: Path, loader: Callable[[str], Bindings], out: str | os.PathLike | None,
             progress: bool | None) -> tuple[BindingTable, CompileStats, OSError | None]:
    out = compiled_path(src) if out is None else Path(out)
    try:
        st = src.stat()
    except OSError as e:
        raise ConfigError(f"cannot read: {e}", file=str(src)) from None
    bar = _Progress(f"compiling {src.name}", _auto_progress(st.st_size) if progress is None else progress)
    bar("load", 0.0)
    t0 = time.perf_counter()
    bindings = loader(str(src))
    t1 = time.perf_counter()
    bar("build", 0.75)
    table = BindingTable.build(bindings)
    t2 = time.perf_counter()
    bar("write", 0.85)
    try:
        size = save(table, out, _source_info(src, st), progress=lambda f: bar("write", 0.85 + 0.15 * f))
        # Use the shared mapping too: the private arrays just built are freed.
        table = load(out, mmap=True, verify=False)
        error = None
    except OSError as e:
        size, error = 0, e
    t3 = time.perf_counter()
    bar.done(f"{len(bindings)} softwires" if error is None else "not saved")
    return table, CompileStats(len(bindings), size, t1 - t0, t2 - t1, t3 - t2), error


def is_fresh(source: str | os.PathLike, compiled: str | os.PathLike) -> bool:
    """Whether ``compiled`` is the current compiled form of ``source``: a good
    header recording the source's present size and mtime, and not older than it
    (the payload checksum is checked by :func:`load`)."""
    try:
        st, cst = os.stat(source), os.stat(compiled)
        h = read_header(compiled)
    except (OSError, CompiledTableError):
        return False
    s = h.source or {}
    return (s.get("size") == st.st_size and s.get("mtime_ns") == st.st_mtime_ns
            and cst.st_mtime_ns >= st.st_mtime_ns)


def compile_cached(source_path: str | os.PathLike, loader: Callable[[str], Bindings],
                   verify: bool = True, progress: bool | None = None, private: bool = False) -> BindingTable:
    """The binding table of ``source_path``, mapped from ``SOURCE.lwbt``.

    The compiled file is (re)built with ``loader`` (path -> Bindings, e.g.
    :func:`lwaftr.bindingtable.textformat.load_text`) when it is missing,
    corrupt (``verify``: payload checksum), of another version or layout, or
    older than the source (its size and mtime are recorded in the header).
    ``private``: see :func:`load`.  If the compiled file cannot be written, the freshly built table is
    returned anyway (with a warning on stderr).
    """
    out = compiled_path(source_path)
    if is_fresh(source_path, out):
        try:
            return load(out, mmap=True, verify=verify, private=private)
        except CompiledTableError:
            pass                                   # corrupt payload: rebuild
    table, _, error = _compile(Path(source_path), loader, out, progress)
    if error is not None:                          # read-only directory, disk full...
        print(f"lwaftr: warning: cannot write {out}: {error}; using an uncached table",
              file=sys.stderr)
    return table
