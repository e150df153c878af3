"""Alarms are raised once, counted, and cleared after the condition stops."""
from __future__ import annotations

from lwaftr import counters as C
from lwaftr.mgmt.alarms import GRACE, HOLD, Alarms


def test_counter_alarm_raised_once_then_cleared():
    c = C.new_array()
    a = Alarms(c)
    assert a.check(0.0) == []
    c[C.DROP_IPV4_FRAG_RANDOM_EVICTED] += 5
    ev = a.check(1.0)
    assert [(e.alarm, e.raised) for e in ev] == [("reassembly-limit", True)] and "+5" in ev[0].text
    c[C.DROP_IPV6_FRAG_RANDOM_EVICTED] += 1
    assert a.check(2.0) == []                             # still the same alarm
    assert c[C.ALARM_REASSEMBLY_LIMIT] == 1
    assert a.check(2.0 + HOLD - 0.1) == []
    assert a.raised() == {"reassembly-limit": ev[0].text}        # what alarms.json holds
    ev = a.check(2.0 + HOLD)
    assert [(e.alarm, e.raised) for e in ev] == [("reassembly-limit", False)]
    assert a.raised() == {}
    c[C.DROP_OVER_RATE_LIMIT_ICMPV6_PACKETS] += 1
    c[C.DROP_IPV4_FRAG_RANDOM_EVICTED] += 1
    ev = a.check(30.0)
    assert sorted(e.alarm for e in ev if e.raised) == ["icmp-rate-limit", "reassembly-limit"]
    assert c[C.ALARM_REASSEMBLY_LIMIT] == 2 and c[C.ALARM_ICMP_RATE_LIMIT] == 1


def test_next_hop_alarm_after_grace_only():
    c = C.new_array()
    a = Alarms(c)
    assert a.check(0.0, ["198.51.100.2"]) == []          # resolving takes a moment
    assert a.check(GRACE / 2, []) == []                   # and it did
    assert a.check(10.0, ["198.51.100.2"]) == []
    ev = a.check(10.0 + GRACE, ["198.51.100.2"])
    assert [(e.alarm, e.raised) for e in ev] == [("next-hop-unresolved", True)] and "198.51.100.2" in ev[0].text
    assert c[C.ALARM_NEXT_HOP_UNRESOLVED] == 1
    assert a.check(15.0, []) == []
    assert [e.raised for e in a.check(10.0 + GRACE + HOLD, [])] == [False]
