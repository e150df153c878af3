"""The text binding-table file: one softwire per line, easy to write by hand.

Format (see also ``docs/binding-table-format.md``)::

    # IPV4       PSID PSID_LENGTH B4_IPV6           BR_IPV6            [RESERVED_BITS]
    192.0.2.1    3    6           2001:db8:1::3     2001:db8:ffff::1
    192.0.2.2    0    0           2001:db8:1::4     2001:db8:ffff::1   # whole address
    198.51.100.7 1    4           2001:db8:2::1     2001:db8:ffff::2   2

* Fields are separated by any run of spaces or tabs; ``#`` starts a comment
  that runs to the end of the line; blank lines are ignored.  The file is
  ASCII (UTF-8 is accepted inside comments); ``\\r\\n`` line ends are fine.
* ``IPV4``: the shared public IPv4 address, dotted quad.
* ``PSID``: the port-set identifier, decimal, ``0 <= PSID < 2**PSID_LENGTH``.
* ``PSID_LENGTH``: bits of PSID, 0..16 (0: the softwire owns every port).
* ``B4_IPV6``: the softwire's B4 (CE) IPv6 address.
* ``BR_IPV6``: the lwAFTR (BR) IPv6 address this softwire tunnels to.
* ``RESERVED_BITS`` (optional, default 0): snabb ``reserved-ports-bit-count``;
  the lowest ``2**RESERVED_BITS`` ports belong to nobody.
  ``PSID_LENGTH + RESERVED_BITS <= 16``.

The softwire rules are those of ``snabb-softwire-v3`` (shared code in
:mod:`lwaftr.config.bindings_check`): no two softwires with the same
(IPV4, PSID), and all softwires of one IPv4 address share PSID_LENGTH and
RESERVED_BITS (else their port sets would overlap).  Any problem raises
:class:`ConfigError` with the file, the 1-based line and the field name
(``IPV4``, ``PSID``, ``PSID_LENGTH``, ``B4_IPV6``, ``BR_IPV6``,
``RESERVED_BITS``) as its path; when several lines are bad, the earliest
line of the first failing check is reported.

Parsing is vectorised: the whole file is tokenised once (``str.split`` in C),
fields are counted per line with numpy, and columns are converted in bulk.
"""
from __future__ import annotations

import os
import re
import socket
from operator import itemgetter
from typing import Callable

import numpy as np

from lwaftr.config import bindings_check as bc
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import Bindings
from lwaftr.fileutil import write_atomic

__all__ = ["FIELDS", "load_text", "loads_text", "dump_text", "dumps_text", "is_text_bindings"]

FIELDS = ("IPV4", "PSID", "PSID_LENGTH", "B4_IPV6", "BR_IPV6", "RESERVED_BITS")
HEADER = "# IPV4 PSID PSID_LENGTH B4_IPV6 BR_IPV6 [RESERVED_BITS]   (lwaftr text binding table)\n"
TEXT_SUFFIXES = (".txt", ".bt")

_NAMES = bc.Names(softwire="IPV4 PSID", psid="PSID", reserved="RESERVED_BITS", port_set="PSID_LENGTH",
                  psid_length_word="PSID_LENGTH", reserved_word="RESERVED_BITS")
#: What ``str.split()`` treats as whitespace, for the ASCII byte values (numpy lookup table).
_WS = np.array([chr(i).isspace() for i in range(256)]) & (np.arange(256) < 128)
_COMMENT = re.compile(rb"#[^\n]*")
_IPV4_LINE = re.compile(r"[ \t]*\d{1,3}(?:\.\d{1,3}){3}(?:[ \t#]|$)")


# --- reading -------------------------------------------------------------------------------------

def load_text(path: str | os.PathLike) -> Bindings:
    """Load and validate a text binding-table file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e}", file=str(path)) from None
    return loads_text(data, str(path))


def loads_text(data: bytes | str, source: str = "<string>") -> Bindings:
    """Parse and validate text binding-table content."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if data.startswith(b"\xef\xbb\xbf"):
        data = b"   " + data[3:]                      # drop a BOM, keep offsets
    if b"#" in data:
        data = _COMMENT.sub(lambda m: b" " * (m.end() - m.start()), data)  # keep offsets
    arr = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(arr == 10)
    if not data.isascii():
        pos = int(np.flatnonzero(arr >= 128)[0])
        line = int(np.searchsorted(nl, pos)) + 1
        raise ConfigError("non-ASCII character outside a comment", file=source, line=line,
                          path=_field_at(arr, nl, pos))
    if not arr.size:
        return Bindings.empty()

    # Tokens: a token starts at a non-space byte after a space byte (or at 0).
    ws = _WS[arr]
    starts = np.flatnonzero(~ws & np.concatenate(([True], ws[:-1])))
    del ws
    line_end = np.append(nl, arr.size)
    upto = np.searchsorted(starts, line_end)          # tokens before the end of each line
    counts = np.diff(upto, prepend=0)
    tokens = data.decode("ascii").split()
    assert len(tokens) == starts.size, "tokeniser disagreement"

    errors: list[tuple[int, int, str, str]] = []      # (line, field order, path, message)
    bad = np.flatnonzero((counts > 0) & ((counts < 5) | (counts > 6)))
    if bad.size:
        i = int(bad[0])
        c = int(counts[i])
        if c < 5:
            errors.append((i + 1, -1, FIELDS[c], f"expected 5 or 6 fields ({' '.join(FIELDS[:5])} "
                           f"[RESERVED_BITS]), got {c}: {FIELDS[c]} is missing"))
        else:
            errors.append((i + 1, -1, "field 7", f"expected 5 or 6 fields, got {c}: "
                           f"unexpected {tokens[int(upto[i]) - c + 6]!r}"))
    rows = np.flatnonzero((counts == 5) | (counts == 6))
    n = rows.size
    if n == 0 and not errors:
        return Bindings.empty()
    line = (rows + 1).astype(np.int32)
    first = upto[rows] - counts[rows]
    six = np.flatnonzero(counts[rows] == 6)
    if not bad.size and (six.size == 0 or six.size == n) and len(tokens) == n * (5 + (six.size == n)):
        w = 5 + (six.size == n)                      # uniform lines: strided slices
        cols = [tokens[j::w] for j in range(w)]
        rsv_s = cols[5] if w == 6 else []
    else:
        cols = [_take(tokens, first + j) for j in range(5)]
        rsv_s = _take(tokens, first[six] + 5)

    def column(j: int, convert: Callable, message: Callable[[str], object], where=None):
        try:
            return convert(cols[j] if j < 5 else rsv_s)
        except bc.Reject as r:
            i = int(r.index if where is None else where[r.index])
            value = (cols[j] if j < 5 else rsv_s)[r.index]
            errors.append((int(line[i]), j, FIELDS[j], _message(message, value)))
            return None

    ipv4_raw = column(0, lambda v: bc.packed(v, bc.pton4), bc.ipv4)
    psid = column(1, lambda v: bc.ints(v, 16, 0xFFFF), bc.uint(16))
    plen = column(2, lambda v: bc.ints(v, 8, 16), bc.uint(8, 0, 16))
    b4_raw = column(3, lambda v: bc.packed(v, bc.pton6), bc.ipv6)
    brs = column(4, bc.br_index, lambda s: bc.ipv6(s) and _too_many_brs())
    rsv6 = column(5, lambda v: bc.ints(v, 8, 16), bc.uint(8, 0, 16), where=six)
    if errors:
        ln, _, path, msg = min(errors, key=lambda e: e[:2])
        raise ConfigError(msg, file=source, line=ln, path=path)

    ipv4 = np.frombuffer(ipv4_raw, ">u4").astype(np.uint32)
    b4 = np.frombuffer(b4_raw, np.uint8).reshape(n, 16).copy()
    rsv = np.zeros(n, np.int64)
    rsv[six] = rsv6
    br_addresses, br_index = brs
    bc.check_port_sets(source, ipv4, psid, plen, rsv, line, _NAMES)
    return Bindings(ipv4=ipv4, psid=psid.astype(np.uint16), psid_length=plen.astype(np.uint8),
                    reserved_ports_bit_count=rsv.astype(np.uint8), b4_ipv6=b4,
                    br_index=br_index, br_addresses=br_addresses, line=line)


def _take(tokens: list[str], idx: np.ndarray) -> list[str]:
    """``[tokens[i] for i in idx]``, in C."""
    if idx.size == 0:
        return []
    if idx.size == 1:
        return [tokens[int(idx[0])]]
    return list(itemgetter(*idx.tolist())(tokens))


def _message(conv: Callable[[str], object], value: str) -> str:
    try:
        conv(value)
    except ValueError as e:
        return str(e)
    raise AssertionError(f"{value!r} was rejected in bulk but accepted alone")


def _too_many_brs() -> None:
    raise ValueError("more than 65536 distinct BR addresses")


def _field_at(arr: np.ndarray, nl: np.ndarray, pos: int) -> str:
    """The name of the field holding byte ``pos``."""
    k = int(np.searchsorted(nl, pos))
    start = int(nl[k - 1]) + 1 if k else 0
    seg = _WS[arr[start:pos + 1]]
    j = int(np.count_nonzero(~seg & np.concatenate(([True], seg[:-1])))) - 1
    return FIELDS[j] if 0 <= j < len(FIELDS) else f"field {j + 1}"


def is_text_bindings(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a text binding-table file: a ``.txt`` / ``.bt``
    name, or a first non-comment line that starts with an IPv4 address."""
    if str(path).lower().endswith(TEXT_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return False
    for ln in head.lstrip("\ufeff").splitlines():
        s = ln.strip()
        if s and not s.startswith("#"):
            return bool(_IPV4_LINE.match(s))
    return False


# --- writing -------------------------------------------------------------------------------------

def dumps_text(b: Bindings, header: bool = True) -> str:
    """``b`` as text binding-table content; :func:`loads_text` reads it back equal."""
    n = len(b)
    out = [HEADER] if header else []
    if not n:
        return "".join(out)
    ntop4 = socket.inet_ntop
    raw4 = np.ascontiguousarray(b.ipv4, ">u4").tobytes()
    v4 = [ntop4(socket.AF_INET, raw4[i:i + 4]) for i in range(0, 4 * n, 4)]
    raw6 = np.ascontiguousarray(b.b4_ipv6, np.uint8).tobytes()
    v6 = [ntop4(socket.AF_INET6, raw6[i:i + 16]) for i in range(0, 16 * n, 16)]
    brs = [socket.inet_ntop(socket.AF_INET6, a) for a in b.br_addresses]
    br = itemgetter(*b.br_index.tolist())(brs) if n > 1 else (brs[int(b.br_index[0])],)
    rsv = b.reserved_ports_bit_count
    tail = [""] * n if not rsv.any() else [f" {r}" if r else "" for r in rsv.tolist()]
    out += [f"{a} {p} {k} {c} {r}{t}\n" for a, p, k, c, r, t in
            zip(v4, b.psid.tolist(), b.psid_length.tolist(), v6, br, tail)]
    return "".join(out)


def dump_text(b: Bindings, path: str | os.PathLike, header: bool = True) -> None:
    """Write ``b`` to ``path`` as a text binding table (atomically: temp file + rename)."""
    write_atomic(path, dumps_text(b, header).encode("ascii"))
