"""Binding table: port-set arithmetic (RFC 7597 5.1) and lookups against a naive model."""
from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import given, settings, strategies as st

from lwaftr.bindingtable.table import BindingTable, psid_of
from lwaftr.config.model import Bindings


def _bindings(rows: list[tuple[str, int, int, int, str, int]], brs: list[str]) -> Bindings:
    """rows: (ipv4, psid, psid_length, reserved_bits, b4, br_index)."""
    n = len(rows)
    return Bindings(
        ipv4=np.array([int(ipaddress.IPv4Address(r[0])) for r in rows], np.uint32),
        psid=np.array([r[1] for r in rows], np.uint16),
        psid_length=np.array([r[2] for r in rows], np.uint8),
        reserved_ports_bit_count=np.array([r[3] for r in rows], np.uint8),
        b4_ipv6=np.array([list(ipaddress.IPv6Address(r[4]).packed) for r in rows], np.uint8).reshape(n, 16),
        br_index=np.array([r[5] for r in rows], np.uint16),
        br_addresses=[ipaddress.IPv6Address(b).packed for b in brs],
        line=np.zeros(n, np.int32),
    )


SNABB_SELFTEST = [
    ("178.79.150.233", 80, 16, 0, "127:2:3:4:5:6:7:128", 0),
    ("178.79.150.233", 2300, 16, 0, "127:11:12:13:14:15:16:128", 0),
    ("178.79.150.233", 2700, 16, 0, "127:11:12:13:14:15:16:128", 0),
    ("178.79.150.233", 4660, 16, 0, "127:11:12:13:14:15:16:128", 0),
    ("178.79.150.233", 7850, 16, 0, "127:11:12:13:14:15:16:128", 0),
    ("178.79.150.233", 22788, 16, 0, "127:11:12:13:14:15:16:128", 0),
    ("178.79.150.233", 54192, 16, 0, "127:11:12:13:14:15:16:128", 0),
    ("178.79.150.15", 0, 4, 0, "127:22:33:44:55:66:77:128", 0),
    ("178.79.150.15", 1, 4, 0, "127:22:33:44:55:66:77:128", 0),
    ("178.79.150.2", 7850, 16, 0, "127:24:35:46:57:68:79:128", 1),
    ("178.79.150.3", 4, 6, 0, "127:14:25:36:47:58:69:128", 2),
]
BRS = ["8:9:a:b:c:d:e:f", "1E:1:1:1:1:1:1:af", "1E:2:2:2:2:2:2:af"]


def _ip(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def test_lookups_like_snabb_selftest():
    t = BindingTable.build(_bindings(SNABB_SELFTEST, BRS))
    v6 = lambda a: ipaddress.IPv6Address(a).packed  # noqa: E731
    assert t.lookup(_ip("178.79.150.233"), 80) == (v6("127:2:3:4:5:6:7:128"), v6(BRS[0]))
    assert t.lookup(_ip("178.79.150.233"), 79) is None
    assert t.lookup(_ip("178.79.150.233"), 81) is None
    for port in (80, 4095, 4096, 8191):
        assert t.lookup(_ip("178.79.150.15"), port)[0] == v6("127:22:33:44:55:66:77:128")
    assert t.lookup(_ip("178.79.150.15"), 8192) is None
    assert t.lookup(_ip("178.79.150.2"), 7850) == (v6("127:24:35:46:57:68:79:128"), v6(BRS[1]))
    assert t.lookup(_ip("178.79.150.3"), 4095) is None
    assert t.lookup(_ip("178.79.150.3"), 4096)[1] == v6(BRS[2])
    assert t.lookup(_ip("178.79.150.3"), 5119) is not None
    assert t.lookup(_ip("178.79.150.3"), 5120) is None
    assert t.lookup(_ip("178.79.150.4"), 7850) is None
    assert t.is_managed(_ip("178.79.150.3")) and not t.is_managed(_ip("178.79.150.4"))


def test_reserved_ports_belong_to_nobody():
    # snabb-softwire-v3: reserved-ports-bit-count 10 reserves the lowest 2^10 ports.
    t = BindingTable.build(_bindings([("192.0.2.1", 0, 2, 10, "2001:db8::1", 0)], ["2001:db8::ff"]))
    assert psid_of(2, 4, 1023) == 4           # out-of-range PSID for a reserved port
    assert t.lookup(_ip("192.0.2.1"), 1023) is None
    assert t.lookup(_ip("192.0.2.1"), 1024) is not None   # (1024 >> 4) & 3 == 0
    assert t.lookup(_ip("192.0.2.1"), 1040) is None       # PSID 1: nobody's


def _naive_lookup(rows, ipv4: int, port: int):
    for r in rows:
        if _ip(r[0]) != ipv4:
            continue
        k, a = r[2], r[3]
        m = 16 - k - a
        if a and port < (1 << a):
            continue
        if (port >> m) & ((1 << k) - 1) == r[1]:
            return r
    return None


@st.composite
def _tables(draw):
    n_addr = draw(st.integers(1, 6))
    rows = []
    for i in range(n_addr):
        ip = f"192.0.2.{i + 1}"
        k = draw(st.integers(0, 8))
        a = draw(st.integers(0, 16 - k)) if k < 16 else 0
        psids = draw(st.sets(st.integers(0, (1 << k) - 1), min_size=1, max_size=min(8, 1 << k)))
        for p in sorted(psids):
            rows.append((ip, p, k, a, f"2001:db8::{len(rows) + 1:x}", len(rows) % 2))
    return rows


@settings(max_examples=60, deadline=None)
@given(_tables(), st.lists(st.tuples(st.integers(1, 7), st.integers(0, 65535)), min_size=1, max_size=50))
def test_lookup_matches_naive_model(rows, probes):
    t = BindingTable.build(_bindings(rows, ["2001:db8::f0", "2001:db8::f1"]))
    ipv4s = np.array([_ip(f"192.0.2.{a}") for a, _ in probes], np.uint32)
    ports = np.array([p for _, p in probes], np.int64)
    got_rows = t.lookup_many(ipv4s, ports)
    for (a, port), row in zip(probes, got_rows):
        want = _naive_lookup(rows, _ip(f"192.0.2.{a}"), port)
        if want is None:
            assert row == -1
        else:
            assert t.b4_of(int(row)) == ipaddress.IPv6Address(want[4]).packed
            assert t.br_of(int(row)) == ipaddress.IPv6Address(["2001:db8::f0", "2001:db8::f1"][want[5]]).packed


def test_table_memory_is_at_most_64_bytes_per_softwire():
    n = 100_000
    rows = Bindings(
        ipv4=(np.arange(n, dtype=np.uint32) // 64) + np.uint32(0xC0000000),
        psid=(np.arange(n) % 64).astype(np.uint16), psid_length=np.full(n, 6, np.uint8),
        reserved_ports_bit_count=np.zeros(n, np.uint8), b4_ipv6=np.zeros((n, 16), np.uint8),
        br_index=np.zeros(n, np.uint16), br_addresses=[b"\0" * 16], line=np.zeros(n, np.int32))
    t = BindingTable.build(rows)
    assert (t.sw_tab.nbytes + t.addr_tab.nbytes) / n <= 64
    assert t.lookup(0xC0000000 + 5, 7 << 10) is not None
