"""Alarms: conditions an operator must hear about, raised and cleared, sans I/O.

=======================  ==============================================  ===========================
alarm                    raised when                                     counter (times raised)
=======================  ==============================================  ===========================
next-hop-unresolved      a next hop has had no MAC for ``GRACE`` seconds  alarm-next-hop-unresolved
reassembly-limit         reassemblies were evicted or refused (limits)   alarm-reassembly-limit
icmp-rate-limit          ICMPv4 or ICMPv6 errors were suppressed by the   alarm-icmp-rate-limit
                         rate limiter
over-budget              packets beyond a per-batch budget for costly    alarm-over-budget
                         work were dropped
=======================  ==============================================  ===========================

An alarm is raised once (a warning log line, its counter + 1) and cleared
(an info line) after ``HOLD`` seconds without its condition, so a condition
that persists is one alarm, not a stream of them.  The live loop calls
:meth:`Alarms.check` about once a second, and keeps :meth:`Alarms.raised` in
its state directory (``alarms.json``), where the SNMP subagent
(:mod:`lwaftr.mgmt.snmp`) sees alarms raised and cleared.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lwaftr import counters as C

GRACE = 2.0     # seconds a next hop may take to resolve before it is an alarm
HOLD = 10.0     # seconds without the condition before an alarm clears

_WATCH = {
    "reassembly-limit": ([C.DROP_IPV4_FRAG_RANDOM_EVICTED, C.DROP_IPV6_FRAG_RANDOM_EVICTED,
                          C.DROP_IPV4_FRAG_INVALID_REASSEMBLY, C.DROP_IPV6_FRAG_INVALID_REASSEMBLY],
                         C.ALARM_REASSEMBLY_LIMIT, "reassembly limits hit: fragments dropped"),
    "icmp-rate-limit": ([C.DROP_OVER_RATE_LIMIT_ICMPV4_PACKETS, C.DROP_OVER_RATE_LIMIT_ICMPV6_PACKETS],
                        C.ALARM_ICMP_RATE_LIMIT,
                        "ICMP error rate limit engaged: errors suppressed"),
    "over-budget": ([C.DROP_OVER_BUDGET_PACKETS], C.ALARM_OVER_BUDGET,
                         "over a per-batch budget for costly work: packets dropped"),
}


@dataclass
class Event:
    alarm: str
    raised: bool          # False: cleared
    text: str


@dataclass
class Alarms:
    counters: np.ndarray
    active: dict[str, float] = field(default_factory=dict)     # alarm -> last time its condition held
    texts: dict[str, str] = field(default_factory=dict)        # alarm -> what it said when raised
    _last: dict[str, int] = field(default_factory=dict)
    _unresolved_since: dict[str, float] = field(default_factory=dict)

    def check(self, now: float, unresolved: list[str] = ()) -> list[Event]:
        """``unresolved``: the next hops (by name) without a MAC right now."""
        events: list[Event] = []
        held: dict[str, str] = {}
        for name, (idx, counter, text) in _WATCH.items():
            total = int(self.counters[idx].sum())
            if total > self._last.get(name, total):
                held[name] = f"{text} (+{total - self._last[name]})"
            self._last[name] = total
        for hop in list(self._unresolved_since):
            if hop not in unresolved:
                del self._unresolved_since[hop]
        for hop in unresolved:
            since = self._unresolved_since.setdefault(hop, now)
            if now - since >= GRACE:
                held["next-hop-unresolved"] = f"next hop {', '.join(unresolved)} unresolved: its traffic is dropped"
        counters_of = {"next-hop-unresolved": C.ALARM_NEXT_HOP_UNRESOLVED,
                       **{n: w[1] for n, w in _WATCH.items()}}
        for name, text in held.items():
            if name not in self.active:
                self.counters[counters_of[name]] += 1
                self.texts[name] = text
                events.append(Event(name, True, text))
            self.active[name] = now
        for name, last in list(self.active.items()):
            if name not in held and now - last >= HOLD:
                del self.active[name]
                del self.texts[name]
                events.append(Event(name, False, f"{name} cleared"))
        return events

    def raised(self) -> dict[str, str]:
        """The alarms raised and not cleared: name -> the text they were raised with."""
        return dict(self.texts)
