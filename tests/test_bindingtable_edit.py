"""Changing a binding table in place: the result always answers lookups as a
table built from scratch with the same softwires would."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lwaftr.bindingtable.edit import EditError, Softwire, TableEditor
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.model import Bindings

BR1, BR2 = bytes.fromhex("20010db8ffff" + "00" * 9 + "01"), bytes.fromhex("20010db8ffff" + "00" * 9 + "02")
BASE = 0xC0000200            # 192.0.2.0


def b4(i: int) -> bytes:
    return bytes.fromhex("20010db80001" + "00" * 6) + i.to_bytes(4, "big")


def build(sws: dict[tuple[int, int], Softwire]) -> BindingTable:
    rows = list(sws.values())
    brs = [BR1, BR2]
    return BindingTable.build(Bindings(
        ipv4=np.array([s.ipv4 for s in rows], np.uint32), psid=np.array([s.psid for s in rows], np.uint16),
        psid_length=np.array([s.psid_length for s in rows], np.uint8),
        reserved_ports_bit_count=np.array([s.reserved_ports_bit_count for s in rows], np.uint8),
        b4_ipv6=np.array([list(s.b4) for s in rows], np.uint8).reshape(-1, 16),
        br_index=np.array([brs.index(s.br) for s in rows], np.uint16), br_addresses=brs))


def answers(t: BindingTable, n_addr: int) -> list:
    """What the table says for every address of the range at a spread of ports."""
    out = []
    for a in range(n_addr):
        for port in (0, 1, 1023, 1024, 4096, 8191, 20000, 40000, 65535):
            out.append((t.lookup(BASE + a, port), t.is_managed(BASE + a)))
    return out


# Per address a fixed layout (psid_length, reserved), so changes stay consistent.
LAYOUT = {0: (0, 0), 1: (4, 0), 2: (6, 0), 3: (3, 2), 4: (16, 0), 5: (1, 0)}

op = st.tuples(st.sampled_from(["put", "remove"]), st.integers(0, 5), st.integers(0, 7), st.integers(0, 300),
               st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=120), st.booleans())
def test_edits_equal_a_fresh_build(ops, start_full):
    ref: dict[tuple[int, int], Softwire] = {}
    if start_full:
        for a, (k, r) in LAYOUT.items():
            for p in range(min(1 << k, 4)):
                ref[(BASE + a, p)] = Softwire(BASE + a, p, k, b4(a * 100 + p), BR1, r)
    table = build(ref)
    table.addr_tab.flags.writeable = False      # as a mapped, shared table is
    table.sw_tab.flags.writeable = False
    ed = TableEditor(table)
    for kind, a, p, who, br2 in ops:
        k, r = LAYOUT[a]
        p %= 1 << k
        ip = BASE + a
        if kind == "put":
            sw = Softwire(ip, p, k, b4(who), BR2 if br2 else BR1, r)
            assert ed.put(sw) == ((ip, p) not in ref)
            ref[(ip, p)] = sw
        elif (ip, p) in ref:
            ed.remove(ip, p)
            del ref[(ip, p)]
        else:
            with pytest.raises(EditError):
                ed.remove(ip, p)
        assert ed.table.count == len(ref)
    assert answers(ed.table, 7) == answers(build(ref), 7)


def test_growth_keeps_every_softwire():
    ed = TableEditor(build({}))
    small = ed.table.sw_tab.shape[0]
    for i in range(5000):
        ed.put(Softwire(BASE + i // 64, i % 64, 6, b4(i), BR1))
    assert ed.table.sw_tab.shape[0] > small and ed.table.count == 5000
    for i in range(0, 5000, 7):
        assert ed.table.lookup(BASE + i // 64, (i % 64) << 10) == (b4(i), BR1)
    for i in range(5000):
        ed.remove(BASE + i // 64, i % 64)
    assert ed.table.count == 0 and not ed.table.sw_tab.any() and not ed.table.addr_tab.any()


def test_bad_changes_are_refused_whole():
    ed = TableEditor(build({(BASE, 1): Softwire(BASE, 1, 4, b4(1), BR1)}))
    before = (ed.table.addr_tab.copy(), ed.table.sw_tab.copy(), ed.table.br_tab.copy())
    bad = [Softwire(BASE, 16, 4, b4(2), BR1),          # psid beyond psid-length
           Softwire(BASE, 2, 6, b4(2), BR1),           # another layout for the same address
           Softwire(BASE, 2, 10, b4(2), BR1, 8),       # psid-length + reserved > 16
           Softwire(BASE, 2, 4, b4(2)[:8], BR1)]       # not an IPv6 address
    for sw in bad:
        with pytest.raises(EditError, match="192.0.2.0 psid"):
            ed.put(sw)
    with pytest.raises(EditError, match="already"):
        ed.put(Softwire(BASE, 1, 4, b4(9), BR2), replace=False)
    assert all(np.array_equal(x, y) for x, y in zip(before, (ed.table.addr_tab, ed.table.sw_tab, ed.table.br_tab)))
    # The last softwire of an address may change the layout (nothing else shares it).
    ed.put(Softwire(BASE, 1, 6, b4(3), BR1))
    assert ed.table.lookup(BASE, 1 << 10) == (b4(3), BR1)
