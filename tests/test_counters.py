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
