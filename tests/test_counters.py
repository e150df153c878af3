"""Every list of counters outside counters.py names counters of its one table,
and the RFC 8676 mapping names the RFC's own leaves."""
from __future__ import annotations

import re
from pathlib import Path

from lwaftr import counters as C
from lwaftr.mgmt import alarms, netconf_data, top

from conftest import yang_leaves

YANG = Path(netconf_data.__file__).resolve().parent.parent / "config" / "yang"


def test_traffic_stat_maps_rfc_8676_leaves_to_our_counters():
    leaves = yang_leaves((YANG / "ietf-softwire-common@2019-11-16.yang").read_text(), "grouping traffic-stat")
    br = (YANG / "ietf-softwire-br@2019-11-16.yang").read_text()
    binding_stat = br[br.index("container traffic-stat"):br.index("uses softwire-common:algorithm-instance")]
    leaves |= set(re.findall(r"leaf ([a-z0-9-]+)", binding_stat))      # the binding instance's own four
    assert set(netconf_data.TRAFFIC_STAT) <= leaves, sorted(set(netconf_data.TRAFFIC_STAT) - leaves)
    assert set(netconf_data.TRAFFIC_STAT.values()) <= set(C.NAMES)
    assert len(netconf_data.TRAFFIC_STAT) == 20


def test_top_and_alarm_lists_are_counters():
    assert set(top.TRAFFIC) | set(top.DROP_SUMS) <= set(C.NAMES)
    for watched, counter, _ in alarms._WATCH.values():
        assert all(0 <= i < C.N_COUNTERS for i in watched) and C.NAMES[counter].startswith("alarm-")
    assert C.DROP_OVER_RATE_LIMIT_ICMPV4_PACKETS in alarms._WATCH["icmp-rate-limit"][0]


def test_names_are_unique_and_constants_match():
    assert len(set(C.NAMES)) == C.N_COUNTERS
    assert C.names(C.IN_IPV4_BYTES, C.DROP_FRAME_TOO_BIG_PACKETS) == ("in-ipv4-bytes", "drop-frame-too-big-packets")


#: Drop counters the compiled stages never add to: the slow path's and the I/O layer's.
NOT_BY_CODE = {"drop-ipv6-frag-disabled", "drop-no-next-hop-ipv4-packets", "drop-no-next-hop-ipv6-packets",
               "drop-to-kernel-packets", "drop-tx-full-packets", "drop-frame-too-big-packets", "drop-rx-ring-full-packets",
               "drop-rx-too-big-packets", "drop-tx-too-big-packets", "drop-tx-invalid-packets"}


def test_error_codes_count_through_the_counter_table():
    """Every error code names counters of the table; every drop counter is some
    code's (or listed as outside the compiled stages); a code adds its stems'
    bytes and packets and its side's drop-all totals."""
    assert C.ERROR_NAMES[0] == "none" and len(set(C.ERROR_NAMES)) == C.N_ERRORS
    named = set()
    for code, (name, stems, side, kind, why) in enumerate(C.ERRORS):
        assert side in (0, 4, 6) and kind in ("in", "out") and why
        counts = C.error_counts(code, 100)
        assert set(counts) <= set(C.NAMES)
        named |= set(counts)
        if side:
            assert counts[f"drop-all-ipv{side}-iface-bytes"] == 100 and counts[f"drop-all-ipv{side}-iface-packets"] == 1
    drops = {n for n in C.NAMES if n.startswith("drop-") and not n.startswith("drop-all-")}
    assert drops - named == NOT_BY_CODE
    assert C.error_counts(C.E_ICMPV4_NO_SOFTWIRE, 60) == {
        "drop-no-dest-softwire-ipv4-bytes": 60, "drop-no-dest-softwire-ipv4-packets": 1,
        "drop-in-by-rfc7596-icmpv4-bytes": 60, "drop-in-by-rfc7596-icmpv4-packets": 1,
        "drop-all-ipv4-iface-bytes": 60, "drop-all-ipv4-iface-packets": 1}
    assert C.error_counts(C.E_EGRESS_FILTER_IPV6, 60) == {"drop-egress-filter-ipv6-packets": 1}


def test_account_from_python_adds_what_the_compiled_account_adds():
    """``counters.account`` (Python, many packets at once) and the compiled
    ``account`` (one packet) add the same counters for every code."""
    from lwaftr.dataplane.account import account
    for code in range(1, C.N_ERRORS):
        py, nb = C.new_array(), C.new_array()
        C.account(py, code, 3, 60 + 70 + 80)
        for n in (60, 70, 80):
            account(nb, code, n)
        assert C.to_dict(py, nonzero=True) == C.to_dict(nb, nonzero=True), C.ERROR_NAMES[code]
        assert C.to_dict(py, nonzero=True)
