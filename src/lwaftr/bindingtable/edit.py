"""Changing a binding table in place, between batches, while it forwards.

The compiled table a worker maps is read-only and shared; :class:`TableEditor`
makes the worker's own writable copy once (copy-on-write pages of a private
mapping cost nothing until touched), then adds, replaces and removes
softwires in microseconds each with compiled code: insertion by linear
probing, removal by backward shifting (no tombstones, so lookups stay as
short as in a freshly built table).  Each change is checked whole before
anything is written; a bad one raises :class:`EditError` and changes nothing.

The caller applies changes between batches (the live loop is single-threaded),
so every batch sees the table either before or after a change, never half.
When the table fills past :data:`MAX_LOAD` it is rebuilt bigger (once in a
long while; about 0.1 s per million softwires).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numba
import numpy as np

from lwaftr.bindingtable.table import (ADDR_OCCUPIED, SW_OCCUPIED, BindingTable, _capacity, _next, _slot,
                                       addr_params)

MAX_LOAD = 0.75
_KEY_MASK = ~SW_OCCUPIED


class EditError(ValueError):
    """A change that cannot be applied (nothing was changed)."""


@dataclass(frozen=True)
class Softwire:
    """One binding-table entry, in wire form."""
    ipv4: int                   # host order
    psid: int
    psid_length: int
    b4: bytes                   # 16 bytes
    br: bytes                   # 16 bytes
    reserved_ports_bit_count: int = 0

    def __str__(self) -> str:
        return f"{ipaddress.IPv4Address(self.ipv4)} psid {self.psid}"


@numba.njit(cache=True, nogil=True)
def _sw_find(sw_tab, key):
    cap = np.uint64(sw_tab.shape[0])
    s = _slot(key, cap)
    while True:
        cur = sw_tab[s, 0]
        if cur == 0:
            return -1, s            # not there; s: where it would go
        if (cur & _KEY_MASK) == key:
            return s, s
        s = _next(s, cap)


@numba.njit(cache=True, nogil=True)
def _sw_put(sw_tab, key, hi, lo, br):
    row, free = _sw_find(sw_tab, key)
    s = row if row >= 0 else free
    sw_tab[s, 1] = hi
    sw_tab[s, 2] = lo
    sw_tab[s, 3] = br
    sw_tab[s, 0] = key | SW_OCCUPIED         # last: the row is whole when it becomes visible
    return row < 0


@numba.njit(cache=True, nogil=True)
def _sw_remove(sw_tab, key):
    """Remove ``key``; backward-shift the cluster behind it.  False if absent."""
    row, _ = _sw_find(sw_tab, key)
    if row < 0:
        return False
    cap = np.uint64(sw_tab.shape[0])
    i = row
    j = row
    while True:
        j = _next(j, cap)
        cur = sw_tab[j, 0]
        if cur == 0:
            break
        k = _slot(cur & _KEY_MASK, cap)
        # The entry at j may move to i unless its home k lies cyclically in (i, j].
        stays = (i < k <= j) if i <= j else (k > i or k <= j)
        if stays:
            continue
        for w in range(1, 4):
            sw_tab[i, w] = sw_tab[j, w]
        sw_tab[i, 0] = cur
        i = j
    sw_tab[i, 0] = 0
    for w in range(1, 4):
        sw_tab[i, w] = 0
    return True


@numba.njit(cache=True, nogil=True)
def _addr_put(addr_tab, word):
    """Insert or overwrite the address word (keyed by its top 32 bits)."""
    a = word >> np.uint64(32)
    cap = np.uint64(addr_tab.shape[0])
    s = _slot(a, cap)
    while addr_tab[s] != 0 and (addr_tab[s] >> np.uint64(32)) != a:
        s = _next(s, cap)
    addr_tab[s] = word


@numba.njit(cache=True, nogil=True)
def _addr_remove(addr_tab, a):
    cap = np.uint64(addr_tab.shape[0])
    s = _slot(a, cap)
    while True:
        cur = addr_tab[s]
        if cur == 0:
            return False
        if (cur >> np.uint64(32)) == a:
            break
        s = _next(s, cap)
    i = s
    j = s
    while True:
        j = _next(j, cap)
        cur = addr_tab[j]
        if cur == 0:
            break
        k = _slot(cur >> np.uint64(32), cap)
        stays = (i < k <= j) if i <= j else (k > i or k <= j)
        if stays:
            continue
        addr_tab[i] = cur
        i = j
    addr_tab[i] = 0
    return True


@numba.njit(cache=True, nogil=True)
def _others(sw_tab, ipv4, psid_length, psid):
    """Whether ``ipv4`` has a softwire other than ``psid`` (at most 2^16 probes)."""
    for p in range(1 << psid_length):
        if p != psid:
            row, _ = _sw_find(sw_tab, (ipv4 << np.uint64(16)) | np.uint64(p))
            if row >= 0:
                return True
    return False


@numba.njit(cache=True, nogil=True)
def _psids(sw_tab, ipv4, psid_length):
    """The PSIDs ``ipv4`` has softwires for (at most 2^16 probes)."""
    out = np.empty(1 << psid_length, np.int64)
    n = 0
    for p in range(1 << psid_length):
        row, _ = _sw_find(sw_tab, (ipv4 << np.uint64(16)) | np.uint64(p))
        if row >= 0:
            out[n] = p
            n += 1
    return out[:n]


@numba.njit(cache=True, nogil=True)
def port_sets(addr_tab, ipv4s):
    """(psid-length, shift) of each address of ``ipv4s`` (uint64), (0, 0) where unmanaged."""
    plen = np.zeros(ipv4s.shape[0], np.int64)
    shift = np.zeros(ipv4s.shape[0], np.int64)
    for i in range(ipv4s.shape[0]):
        plen[i], shift[i] = addr_params(addr_tab, np.uint32(ipv4s[i]))
    return plen, shift


@numba.njit(cache=True, nogil=True)
def _rows_of_b4(sw_tab, hi, lo):
    """The rows holding B4 address (hi, lo): one pass over the table (about 2 ms a
    million softwires), so no index has to be built or kept."""
    out = []
    for r in range(sw_tab.shape[0]):
        if sw_tab[r, 1] == hi and sw_tab[r, 2] == lo and sw_tab[r, 0] != 0:
            out.append(r)
    return out


@numba.njit(cache=True, nogil=True)
def _rehash_sw(old, new):
    for r in range(old.shape[0]):
        w = old[r, 0]
        if w != 0:
            _sw_put(new, w & _KEY_MASK, old[r, 1], old[r, 2], old[r, 3])


@numba.njit(cache=True, nogil=True)
def _rehash_addr(old, new):
    for r in range(old.shape[0]):
        if old[r] != 0:
            _addr_put(new, old[r])


def _b4_words(b4: bytes) -> tuple[np.uint64, np.uint64]:
    return np.uint64(int.from_bytes(b4[:8], "big")), np.uint64(int.from_bytes(b4[8:], "big"))


class TableEditor:
    """Adds, replaces and removes softwires of ``table`` in place (see module doc).

    ``table`` is modified (its arrays become a private writable copy on the
    first change, and are replaced when the table grows): callers that hold
    its arrays must read them again after each call, as the engine does at
    every batch.
    """

    def __init__(self, table: BindingTable) -> None:
        self.table = table
        self._n_addr: int | None = None     # IPv4 addresses in the table, counted on first use

    # -- preparation ---------------------------------------------------------
    def _writable(self) -> None:
        t = self.table
        if not (t.sw_tab.flags.writeable and t.addr_tab.flags.writeable and t.br_tab.flags.writeable):
            # (A table loaded with ``private=True`` is already writeable, copy-on-write.)
            t.addr_tab = np.array(t.addr_tab)
            t.sw_tab = np.array(t.sw_tab)
            t.br_tab = np.array(t.br_tab)
        if self._n_addr is None:
            self._n_addr = int(np.count_nonzero(t.addr_tab))

    def _room(self, extra_sw: int, extra_addr: int) -> None:
        t = self.table
        if t.count + extra_sw > MAX_LOAD * t.sw_tab.shape[0]:
            new = np.zeros((_capacity(int((t.count + extra_sw) * 1.5)), 4), np.uint64)
            _rehash_sw(t.sw_tab, new)
            t.sw_tab = new
        if self._n_addr + extra_addr > MAX_LOAD * t.addr_tab.shape[0]:
            new_a = np.zeros(_capacity(int((self._n_addr + extra_addr) * 1.5)), np.uint64)
            _rehash_addr(t.addr_tab, new_a)
            t.addr_tab = new_a

    def _br_index(self, br: bytes) -> int:
        t = self.table
        for i in range(t.br_tab.shape[0]):
            if t.br_tab[i].tobytes() == br:
                return i
        if t.count == 0 and not t.br_tab.any():
            t.br_tab[0] = np.frombuffer(br, np.uint8)          # the placeholder row of an empty table
            return 0
        t.br_tab = np.vstack([t.br_tab, np.frombuffer(br, np.uint8)[None, :]])
        return t.br_tab.shape[0] - 1

    # -- changes -------------------------------------------------------------
    def check(self, sw: Softwire) -> None:
        """Raise :class:`EditError` if ``sw`` cannot be added or replace its (ipv4, psid)."""
        if not 0 <= sw.ipv4 < 1 << 32:
            raise EditError(f"{sw}: bad IPv4 address")
        if not 0 <= sw.psid_length <= 16 or not 0 <= sw.reserved_ports_bit_count <= 16 \
                or sw.psid_length + sw.reserved_ports_bit_count > 16:
            raise EditError(f"{sw}: psid-length {sw.psid_length} + reserved-ports-bit-count "
                            f"{sw.reserved_ports_bit_count} must be at most 16")
        if not 0 <= sw.psid < 1 << sw.psid_length:
            raise EditError(f"{sw}: psid {sw.psid} does not fit in psid-length {sw.psid_length}")
        if len(sw.b4) != 16 or len(sw.br) != 16:
            raise EditError(f"{sw}: B4 and BR addresses must be IPv6")
        plen, shift = addr_params(self.table.addr_tab, np.uint32(sw.ipv4))
        want_shift = 16 - sw.psid_length - sw.reserved_ports_bit_count
        if (plen or shift) and (plen, shift) != (sw.psid_length, want_shift) \
                and _others(self.table.sw_tab, np.uint64(sw.ipv4), plen, sw.psid):
            raise EditError(f"{sw}: the other softwires of {ipaddress.IPv4Address(sw.ipv4)} have "
                            f"psid-length {plen} and reserved-ports-bit-count {16 - plen - shift}; "
                            f"one address has one port-set layout")

    def get(self, ipv4: int, psid: int) -> Softwire | None:
        """The softwire of (ipv4, psid), or None."""
        t = self.table
        row, _ = _sw_find(t.sw_tab, np.uint64((ipv4 << 16) | psid))
        if row < 0:
            return None
        plen, shift = addr_params(t.addr_tab, np.uint32(ipv4))
        w = t.sw_tab[row]
        return Softwire(ipv4, psid, int(plen), int(w[1]).to_bytes(8, "big") + int(w[2]).to_bytes(8, "big"),
                        t.br_tab[int(w[3])].tobytes(), int(16 - plen - shift))

    def of_b4(self, b4: bytes) -> list[Softwire]:
        """The softwires whose B4 address is ``b4``."""
        hi, lo = _b4_words(b4)
        out = []
        for r in _rows_of_b4(self.table.sw_tab, hi, lo):
            key = int(self.table.sw_tab[r, 0] & _KEY_MASK)
            sw = self.get(key >> 16, key & 0xFFFF)
            if sw is not None:
                out.append(sw)
        return sorted(out, key=lambda sw: (sw.ipv4, sw.psid))

    def of_address(self, ipv4: int) -> list[Softwire]:
        """The softwires of one IPv4 address, by PSID."""
        plen, _ = addr_params(self.table.addr_tab, np.uint32(ipv4))
        return [sw for p in _psids(self.table.sw_tab, np.uint64(ipv4), int(plen)).tolist()
                if (sw := self.get(ipv4, p)) is not None]

    def _exists(self, ipv4: int, psid: int) -> bool:
        row, _ = _sw_find(self.table.sw_tab, np.uint64((ipv4 << 16) | psid))
        return row >= 0

    def put(self, sw: Softwire, *, replace: bool = True) -> bool:
        """Add ``sw``, or replace the softwire of its (ipv4, psid) if ``replace``;
        returns True if it was new."""
        self._writable()
        self.check(sw)
        existed = self._exists(sw.ipv4, sw.psid)
        if existed and not replace:
            raise EditError(f"{sw}: already in the binding table")
        t = self.table
        new_addr = not (addr_params(t.addr_tab, np.uint32(sw.ipv4)) != (0, 0))
        self._room(0 if existed else 1, int(new_addr))
        br = self._br_index(sw.br)
        shift = 16 - sw.psid_length - sw.reserved_ports_bit_count
        _addr_put(t.addr_tab, (np.uint64(sw.ipv4) << np.uint64(32)) | ADDR_OCCUPIED
                  | (np.uint64(sw.psid_length) << np.uint64(8)) | np.uint64(shift))
        hi, lo = _b4_words(sw.b4)
        new = _sw_put(t.sw_tab, np.uint64((sw.ipv4 << 16) | sw.psid), hi, lo, np.uint64(br))
        if new:
            t.count += 1
        if new_addr:
            self._n_addr += 1
        return bool(new)

    def remove(self, ipv4: int, psid: int) -> None:
        """Remove the softwire of (ipv4, psid); EditError if there is none."""
        self._writable()
        t = self.table
        if not _sw_remove(t.sw_tab, np.uint64((ipv4 << 16) | psid)):
            raise EditError(f"{ipaddress.IPv4Address(ipv4)} psid {psid}: not in the binding table")
        t.count -= 1
        plen, _ = addr_params(t.addr_tab, np.uint32(ipv4))
        if not _others(t.sw_tab, np.uint64(ipv4), plen, psid):
            _addr_remove(t.addr_tab, np.uint64(ipv4))       # its last softwire: no longer served at all
            self._n_addr -= 1
