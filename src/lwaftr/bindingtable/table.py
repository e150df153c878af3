"""The binding table: (IPv4 address, port) -> softwire, in flat arrays.

Port sets (RFC 7597 section 5.1, as used by RFC 7596)::

                        0                   1
                        0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
                       +-----------+-----------+-------+
         Ports in      |     A     |    PSID   |   j   |
      the CE port set  |    > 0    |           |       |
                       +-----------+-----------+-------+
                       |  a bits   |  k bits   |m bits |

Names used here: a = ``reserved_ports_bit_count``, k = ``psid_length``,
m = ``shift`` = 16 - k - a.  ``psid = (port >> shift) & (2**k - 1)``; a
port below ``2**a`` (when a > 0) is reserved and belongs to no softwire.
That is the ``snabb-softwire-v3`` meaning of ``reserved-ports-bit-count``
("reserve the lowest 2^N ports"), which the reference vectors follow; note
that RFC 7597's ``a`` excludes the ports below ``2**(16 - a)`` instead.

Two open-addressing tables, both ``uint64`` so compiled kernels read them
directly and processes can map them read-only:

``addr_tab`` (one row of 1 word per IPv4 address)
    ``ipv4 << 32 | OCCUPIED | psid_length << 8 | shift``.
``sw_tab`` (one row of 4 words per softwire, 32 bytes)
    ``[OCCUPIED | ipv4 << 16 | psid, b4[0:8] big-endian, b4[8:16], br_index]``.

Both are sized to a load factor of about 0.55 with linear probing, so a
softwire costs about 58 bytes of table (plus 15 per distinct address).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from lwaftr.config.model import Bindings

ADDR_OCCUPIED = np.uint64(1 << 16)
SW_OCCUPIED = np.uint64(1 << 63)
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
NO_MATCH = -1
#: :func:`probe`'s slot for a key no softwire can have.
NO_SLOT = -1


@numba.njit(cache=True, nogil=True)
def _slot(key: np.uint64, cap: np.uint64) -> np.int64:
    # Fibonacci hashing, then Lemire's multiply-high to map 32 bits onto [0, cap).
    h = (key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return np.int64((h * cap) >> np.uint64(32))


@numba.njit(cache=True, nogil=True)
def _next(s: np.int64, cap: np.uint64) -> np.int64:
    s += 1
    return 0 if s == np.int64(cap) else s


def _capacity(n: int) -> int:
    """Slots for ``n`` keys at a load factor of about 0.55 (any size, not a
    power of two: slots are picked by multiply-high, see :func:`_slot`)."""
    return max(16, -(-int(n / 0.55) // 64) * 64)


@numba.njit(cache=True, nogil=True)
def _build(ipv4, psid, psid_length, reserved, b4, br_index, addr_tab, sw_tab):
    amask = np.uint64(addr_tab.shape[0])
    smask = np.uint64(sw_tab.shape[0])
    for i in range(ipv4.shape[0]):
        a = np.uint64(ipv4[i])
        shift = np.uint64(16 - psid_length[i] - reserved[i])
        word = (a << np.uint64(32)) | ADDR_OCCUPIED | (np.uint64(psid_length[i]) << np.uint64(8)) | shift
        s = _slot(a, amask)
        while True:
            cur = addr_tab[s]
            if cur == 0:
                addr_tab[s] = word
                break
            if (cur >> np.uint64(32)) == a:
                break
            s = _next(s, amask)
        key = (a << np.uint64(16)) | np.uint64(psid[i])
        s = _slot(key, smask)
        while sw_tab[s, 0] != 0 and (sw_tab[s, 0] & ~SW_OCCUPIED) != key:
            s = _next(s, smask)
        hi = np.uint64(0)
        lo = np.uint64(0)
        for j in range(8):
            hi = (hi << np.uint64(8)) | np.uint64(b4[i, j])
            lo = (lo << np.uint64(8)) | np.uint64(b4[i, 8 + j])
        sw_tab[s, 0] = key | SW_OCCUPIED
        sw_tab[s, 1] = hi
        sw_tab[s, 2] = lo
        sw_tab[s, 3] = np.uint64(br_index[i])


@numba.njit(cache=True, nogil=True)
def addr_params(addr_tab, ipv4):
    """(psid_length, shift) of an IPv4 address, or (0, 0) if not managed."""
    a = np.uint64(ipv4)
    mask = np.uint64(addr_tab.shape[0])
    s = _slot(a, mask)
    while True:
        cur = addr_tab[s]
        if cur == 0:
            return 0, 0
        if (cur >> np.uint64(32)) == a:
            return np.int64((cur >> np.uint64(8)) & np.uint64(0xFF)), np.int64(cur & np.uint64(0xFF))
        s = _next(s, mask)


@numba.njit(cache=True, nogil=True)
def psid_of(psid_length, shift, port):
    """The PSID a port belongs to; an impossible PSID for a reserved port."""
    psid_mask = (1 << psid_length) - 1
    psid = (port >> shift) & psid_mask
    if psid_length + shift < 16:
        reserved = 16 - psid_length - shift
        if port < (1 << reserved):
            psid = psid_mask + 1
    return psid


@numba.njit(cache=True, nogil=True)
def probe(addr_tab, sw_tab, ipv4, port):
    """(key, first slot) of the softwire lookup for (ipv4, port): the first
    half of :func:`lookup`, so callers can prefetch ``sw_tab[slot]`` first.
    The slot is :data:`NO_SLOT` when no softwire can own them (an address the
    table does not serve, or a reserved port): the lookup then ends at once,
    so a flood of such frames costs no walk through the big table."""
    plen, shift = addr_params(addr_tab, ipv4)
    psid = psid_of(plen, shift, port)
    key = (np.uint64(ipv4) << np.uint64(16)) | np.uint64(psid)
    if plen + shift == 0 or (psid >> plen) != 0:
        return key, np.int64(NO_SLOT)
    return key, _slot(key, np.uint64(sw_tab.shape[0]))


@numba.njit(cache=True, nogil=True)
def lookup_at(sw_tab, key, s):
    """Row holding ``key``, probing linearly from slot ``s``; -1 if none (or ``s`` is :data:`NO_SLOT`)."""
    if s < 0:
        return -1
    cap = np.uint64(sw_tab.shape[0])
    while True:
        cur = sw_tab[s, 0]
        if cur == 0:
            return -1
        if (cur & ~SW_OCCUPIED) == key:
            return s
        s = _next(s, cap)


@numba.njit(cache=True, nogil=True)
def lookup(addr_tab, sw_tab, ipv4, port):
    """Row of ``sw_tab`` of the softwire owning (ipv4, port), or -1."""
    key, s = probe(addr_tab, sw_tab, ipv4, port)
    return lookup_at(sw_tab, key, s)


@numba.njit(cache=True, nogil=True)
def is_managed(addr_tab, ipv4):
    """Whether the lwAFTR serves this IPv4 address (Snabb: psid_length + shift > 0)."""
    plen, shift = addr_params(addr_tab, ipv4)
    return plen + shift > 0


@numba.njit(cache=True)
def _lookup_many(addr_tab, sw_tab, ipv4s, ports, out):
    for i in range(ipv4s.shape[0]):
        out[i] = lookup(addr_tab, sw_tab, ipv4s[i], ports[i])


@dataclass
class BindingTable:
    """Compiled, immutable binding table.  Swap the whole object to change it."""
    addr_tab: np.ndarray   # uint64[cap_a]
    sw_tab: np.ndarray     # uint64[cap_s, 4]
    br_tab: np.ndarray     # uint8[n_br, 16]
    count: int

    @classmethod
    def build(cls, b: Bindings) -> "BindingTable":
        n = len(b)
        addr_tab = np.zeros(_capacity(len(np.unique(b.ipv4)) if n else 0), np.uint64)
        sw_tab = np.zeros((_capacity(n), 4), np.uint64)
        if n:
            _build(b.ipv4.astype(np.uint32), b.psid.astype(np.uint16), b.psid_length.astype(np.uint8),
                   b.reserved_ports_bit_count.astype(np.uint8), np.ascontiguousarray(b.b4_ipv6, np.uint8),
                   b.br_index.astype(np.uint16), addr_tab, sw_tab)
        br = np.zeros((max(len(b.br_addresses), 1), 16), np.uint8)
        for i, a in enumerate(b.br_addresses):
            br[i] = np.frombuffer(a, np.uint8)
        return cls(addr_tab, sw_tab, br, n)

    # Python-side helpers (management, tests).  Kernels call the njit functions.
    def lookup(self, ipv4: int, port: int) -> tuple[bytes, bytes] | None:
        """(b4_ipv6, br_address) owning (ipv4, port), or None."""
        row = lookup(self.addr_tab, self.sw_tab, np.uint32(ipv4), np.int64(port))
        if row < 0:
            return None
        return self.b4_of(row), self.br_of(row)

    def lookup_many(self, ipv4s: np.ndarray, ports: np.ndarray) -> np.ndarray:
        out = np.empty(ipv4s.shape[0], np.int64)
        _lookup_many(self.addr_tab, self.sw_tab, ipv4s.astype(np.uint32), ports.astype(np.int64), out)
        return out

    def b4_of(self, row: int) -> bytes:
        return int(self.sw_tab[row, 1]).to_bytes(8, "big") + int(self.sw_tab[row, 2]).to_bytes(8, "big")

    def br_of(self, row: int) -> bytes:
        return self.br_tab[int(self.sw_tab[row, 3])].tobytes()

    def is_managed(self, ipv4: int) -> bool:
        return bool(is_managed(self.addr_tab, np.uint32(ipv4)))
