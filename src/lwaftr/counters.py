"""The lwAFTR's counters, declared once.

Names and meanings are the ``softwire-state`` leaves of ``snabb-softwire-v3``
(the per-reason counters the reference vectors check).  Every other view of
the counters (kernel indices, the ``uint64`` array, JSON output, the YANG
check in the tests) is generated from :data:`COUNTERS`.

Kernels add to one shared ``uint64[N_COUNTERS]`` array by
index; the index constants below (``IN_IPV4_BYTES`` ...) are module-level ints
so numba freezes them into compiled code.
"""
from __future__ import annotations

import numpy as np

# (name, description).  Order fixes the array index; append only.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("drop-all-ipv4-iface-bytes", "All bytes dropped that arrived on the IPv4 interface (or were hairpinned)."),
    ("drop-all-ipv4-iface-packets", "All packets dropped that arrived on the IPv4 interface."),
    ("drop-all-ipv6-iface-bytes", "All bytes dropped that arrived on the IPv6 interface."),
    ("drop-all-ipv6-iface-packets", "All packets dropped that arrived on the IPv6 interface."),
    ("drop-bad-checksum-icmpv4-bytes", "ICMPv4 with a bad checksum (RFC 5508)."),
    ("drop-bad-checksum-icmpv4-packets", "ICMPv4 with a bad checksum (RFC 5508)."),
    ("drop-in-by-policy-icmpv4-bytes", "Incoming ICMPv4 dropped by policy."),
    ("drop-in-by-policy-icmpv4-packets", "Incoming ICMPv4 dropped by policy."),
    ("drop-in-by-policy-icmpv6-bytes", "Incoming ICMPv6 dropped by policy."),
    ("drop-in-by-policy-icmpv6-packets", "Incoming ICMPv6 dropped by policy."),
    ("drop-in-by-rfc7596-icmpv4-bytes", "Incoming ICMPv4 for no softwire, silently dropped (RFC 7596 8.1)."),
    ("drop-in-by-rfc7596-icmpv4-packets", "Incoming ICMPv4 for no softwire, silently dropped (RFC 7596 8.1)."),
    ("drop-ipv4-frag-disabled", "IPv4 fragments dropped because reassembly is off."),
    ("drop-ipv4-frag-invalid-reassembly", "IPv4 fragments that could not be reassembled."),
    ("drop-ipv4-frag-random-evicted", "IPv4 reassemblies evicted to make room for new ones."),
    ("drop-ipv6-frag-disabled", "IPv6 fragments dropped because reassembly is off."),
    ("drop-ipv6-frag-invalid-reassembly", "IPv6 fragments that could not be reassembled."),
    ("drop-ipv6-frag-random-evicted", "IPv6 reassemblies evicted to make room for new ones."),
    ("drop-misplaced-not-ipv4-bytes", "Non-IPv4 traffic on the IPv4 interface."),
    ("drop-misplaced-not-ipv4-packets", "Non-IPv4 traffic on the IPv4 interface."),
    ("drop-misplaced-not-ipv6-bytes", "Non-IPv6 traffic on the IPv6 interface."),
    ("drop-misplaced-not-ipv6-packets", "Non-IPv6 traffic on the IPv6 interface."),
    ("drop-no-dest-softwire-ipv4-bytes", "IPv4 to an address and port no softwire owns."),
    ("drop-no-dest-softwire-ipv4-packets", "IPv4 to an address and port no softwire owns."),
    ("drop-no-source-softwire-ipv6-bytes", "Tunnelled IPv4 from a B4, address and port no softwire binds."),
    ("drop-no-source-softwire-ipv6-packets", "Tunnelled IPv4 from a B4, address and port no softwire binds."),
    ("drop-out-by-policy-icmpv4-packets", "ICMPv4 errors not sent because of policy."),
    ("drop-out-by-policy-icmpv6-packets", "ICMPv6 errors not sent because of policy."),
    ("drop-over-mtu-but-dont-fragment-ipv4-bytes", "IPv4 with DF set that would exceed the IPv6 MTU once encapsulated."),
    ("drop-over-mtu-but-dont-fragment-ipv4-packets", "IPv4 with DF set that would exceed the IPv6 MTU once encapsulated."),
    ("drop-over-rate-limit-icmpv6-bytes", "ICMPv6 errors suppressed by the rate limiter."),
    ("drop-over-rate-limit-icmpv6-packets", "ICMPv6 errors suppressed by the rate limiter."),
    ("drop-over-time-but-not-hop-limit-icmpv6-bytes", "ICMPv6 time exceeded that is not hop limit exceeded."),
    ("drop-over-time-but-not-hop-limit-icmpv6-packets", "ICMPv6 time exceeded that is not hop limit exceeded."),
    ("drop-too-big-type-but-not-code-icmpv6-bytes", "ICMPv6 packet-too-big with a code other than 0."),
    ("drop-too-big-type-but-not-code-icmpv6-packets", "ICMPv6 packet-too-big with a code other than 0."),
    ("drop-ttl-zero-ipv4-bytes", "IPv4 whose TTL reached zero."),
    ("drop-ttl-zero-ipv4-packets", "IPv4 whose TTL reached zero."),
    ("drop-unknown-protocol-icmpv6-bytes", "ICMPv6 of a type the lwAFTR does not handle."),
    ("drop-unknown-protocol-icmpv6-packets", "ICMPv6 of a type the lwAFTR does not handle."),
    ("drop-unknown-protocol-ipv6-bytes", "IPv6 carrying neither IPv4 nor ICMPv6 (or a refused extension header)."),
    ("drop-unknown-protocol-ipv6-packets", "IPv6 carrying neither IPv4 nor ICMPv6 (or a refused extension header)."),
    ("hairpin-ipv4-bytes", "IPv4 from one B4 to another, hairpinned."),
    ("hairpin-ipv4-packets", "IPv4 from one B4 to another, hairpinned."),
    ("in-ipv4-bytes", "IPv4 bytes received."),
    ("in-ipv4-frag-needs-reassembly", "IPv4 fragments received."),
    ("in-ipv4-frag-reassembled", "IPv4 packets reassembled."),
    ("in-ipv4-frag-reassembly-unneeded", "IPv4 packets that were not fragments."),
    ("in-ipv4-packets", "IPv4 packets received."),
    ("in-ipv6-bytes", "IPv6 bytes received."),
    ("in-ipv6-frag-needs-reassembly", "IPv6 fragments received."),
    ("in-ipv6-frag-reassembled", "IPv6 packets reassembled."),
    ("in-ipv6-frag-reassembly-unneeded", "IPv6 packets that were not fragments."),
    ("in-ipv6-packets", "IPv6 packets received."),
    ("ingress-packet-drops", "Packets dropped because the receive queue overflowed."),
    ("in-arp-request-bytes", "ARP requests received."),
    ("in-arp-request-packets", "ARP requests received."),
    ("out-arp-request-bytes", "ARP requests sent."),
    ("out-arp-request-packets", "ARP requests sent."),
    ("in-arp-reply-bytes", "ARP replies received."),
    ("in-arp-reply-packets", "ARP replies received."),
    ("out-arp-reply-bytes", "ARP replies sent."),
    ("out-arp-reply-packets", "ARP replies sent."),
    ("in-ndp-ns-bytes", "Neighbour solicitations received."),
    ("in-ndp-ns-packets", "Neighbour solicitations received."),
    ("out-ndp-ns-bytes", "Neighbour solicitations sent."),
    ("out-ndp-ns-packets", "Neighbour solicitations sent."),
    ("in-ndp-na-bytes", "Neighbour advertisements received."),
    ("in-ndp-na-packets", "Neighbour advertisements received."),
    ("out-ndp-na-bytes", "Neighbour advertisements sent."),
    ("out-ndp-na-packets", "Neighbour advertisements sent."),
    ("out-icmpv4-error-bytes", "ICMPv4 errors sent."),
    ("out-icmpv4-error-packets", "ICMPv4 errors sent."),
    ("out-icmpv6-error-bytes", "ICMPv6 errors sent."),
    ("out-icmpv6-error-packets", "ICMPv6 errors sent."),
    ("in-icmpv4-echo-bytes", "ICMPv4 echo requests to the lwAFTR received."),
    ("in-icmpv4-echo-packets", "ICMPv4 echo requests to the lwAFTR received."),
    ("out-icmpv4-echo-bytes", "ICMPv4 echo replies sent by the lwAFTR."),
    ("out-icmpv4-echo-packets", "ICMPv4 echo replies sent by the lwAFTR."),
    ("in-icmpv6-echo-bytes", "ICMPv6 echo requests to the lwAFTR received."),
    ("in-icmpv6-echo-packets", "ICMPv6 echo requests to the lwAFTR received."),
    ("out-icmpv6-echo-bytes", "ICMPv6 echo replies sent by the lwAFTR."),
    ("out-icmpv6-echo-packets", "ICMPv6 echo replies sent by the lwAFTR."),
    ("out-ipv4-bytes", "IPv4 bytes sent."),
    ("out-ipv4-frag", "IPv4 fragments sent."),
    ("out-ipv4-frag-not", "IPv4 packets sent unfragmented."),
    ("out-ipv4-packets", "IPv4 packets sent."),
    ("out-ipv6-bytes", "IPv6 bytes sent."),
    ("out-ipv6-frag", "IPv6 fragments sent."),
    ("out-ipv6-frag-not", "IPv6 packets sent unfragmented."),
    ("out-ipv6-packets", "IPv6 packets sent."),
    # Our own, beyond snabb-softwire-v3: malformed input (truncated frames,
    # bad IHL or lengths, bad IPv4 header checksums) and refused extension
    # headers, each dropped and counted rather than guessed at.
    ("drop-malformed-ipv4-bytes", "IPv4 frames too short or with bad IHL, lengths or header checksum."),
    ("drop-malformed-ipv4-packets", "IPv4 frames too short or with bad IHL, lengths or header checksum."),
    ("drop-malformed-ipv6-bytes", "IPv6 frames too short or with inconsistent lengths."),
    ("drop-malformed-ipv6-packets", "IPv6 frames too short or with inconsistent lengths."),
    ("drop-ingress-filter-ipv4-packets", "IPv4-interface packets refused by the ingress filter."),
    ("drop-ingress-filter-ipv6-packets", "IPv6-interface packets refused by the ingress filter."),
    ("drop-egress-filter-ipv4-packets", "Packets refused by the IPv4 egress filter."),
    ("drop-egress-filter-ipv6-packets", "Packets refused by the IPv6 egress filter."),
    ("drop-no-next-hop-ipv4-packets", "IPv4 not sent because the next hop's MAC is not yet known."),
    ("drop-no-next-hop-ipv6-packets", "IPv6 not sent because the next hop's MAC is not yet known."),
    ("drop-wrong-vlan-packets", "Frames without the interface's VLAN tag."),
    # Kernel control-plane mode: frames passed to and from the kernel's TAPs.
    ("to-kernel-ipv4-interface-packets", "Frames of the IPv4 interface passed to the kernel (its TAP)."),
    ("to-kernel-ipv6-interface-packets", "Frames of the IPv6 interface passed to the kernel (its TAP)."),
    ("from-kernel-ipv4-interface-packets", "Frames the kernel sent out of the IPv4 interface."),
    ("from-kernel-ipv6-interface-packets", "Frames the kernel sent out of the IPv6 interface."),
    ("drop-to-kernel-packets", "Frames for the kernel dropped because its TAP was full or absent."),
    ("drop-tx-full-packets", "Frames not sent because the interface's transmit ring was full."),
    # Alarms raised (each also a log line; see lwaftr.mgmt.alarms).
    ("alarm-next-hop-unresolved", "Times a next hop stayed unresolved (traffic to it dropped)."),
    ("alarm-reassembly-limit", "Times reassembly limits were hit (reassemblies evicted or refused)."),
    ("alarm-icmp-rate-limit", "Times the ICMP error rate limiter engaged."),
    ("drop-over-rate-limit-icmpv4-bytes", "ICMPv4 errors suppressed by the rate limiter."),
    ("drop-over-rate-limit-icmpv4-packets", "ICMPv4 errors suppressed by the rate limiter."),
    ("drop-frame-too-big-packets", "Frames to send (from the kernel's TAP) longer than a "
                                   "packet buffer, dropped."),
    # What the interfaces' rings hold back, delay or drop, and frames held for a
    # next hop: no frame is lost or kept without a count.
    ("drop-rx-ring-full-packets", "Frames the kernel dropped because the receive ring was full "
                                  "(AF_PACKET PACKET_STATISTICS tp_drops; AF_XDP rx_dropped and rx_ring_full)."),
    ("drop-rx-too-big-packets", "Frames received that do not fit a packet-pool slot."),
    ("drop-tx-too-big-packets", "Frames not sent because they are longer than the interface can send "
                                "(its MTU plus the Ethernet header, and a VLAN tag if it has one)."),
    ("drop-tx-invalid-packets", "Frames the kernel refused from the transmit ring (AF_XDP tx_invalid_descs)."),
    ("tx-kick-deferred", "Times the kernel refused a transmit kick (EAGAIN, ENOBUFS): the frames waited "
                         "in the ring for the next kick."),
    ("next-hop-held-packets", "Frames held while the next hop was unresolved (built-in control plane): "
                              "sent once it resolves, or dropped beyond the hold limit (drop-no-next-hop-*)."),
    ("drop-over-budget-packets", "Packets beyond a per-batch budget for work costlier than the common path "
                                 "(packets reassembled beyond a pool slot), dropped."),
    ("alarm-over-budget", "Times a per-batch budget was exceeded (packets dropped)."),
    ("drop-pool-exhausted-packets", "Frames dropped because the packet pool had no free slot for their fragments."),
    ("monitor-skipped-packets", "Frames of the monitored address not copied to the monitor: beyond its per-batch "
                                "budget, or with the packet pool short (the frames themselves went on)."),
    ("drop-unclassified-packets", "Frames no stage of the data plane took (none should be: a defect to "
                                  "report), dropped."),
)

NAMES: tuple[str, ...] = tuple(n for n, _ in COUNTERS)
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}
N_COUNTERS: int = len(NAMES)

#: Counters that are ours, not snabb-softwire-v3 leaves.
EXTENSIONS: frozenset[str] = frozenset(NAMES[NAMES.index("drop-malformed-ipv4-bytes"):])


def _const_name(name: str) -> str:
    return name.upper().replace("-", "_")


# Module-level int constants, e.g. IN_IPV4_BYTES, for the kernels.
for _i, _n in enumerate(NAMES):
    globals()[_const_name(_n)] = _i
del _i, _n


def names(*indices: int) -> tuple[str, ...]:
    """The names of counters given by their index constants (``names(IN_IPV4_BYTES, ...)``):
    how other modules list counters, so that a name that is not in the table cannot be written."""
    return tuple(NAMES[i] for i in indices)


def new_array() -> np.ndarray:
    """A fresh zeroed counter array (``uint64[N_COUNTERS]``)."""
    return np.zeros(N_COUNTERS, dtype=np.uint64)


def to_dict(arr: np.ndarray, *, nonzero: bool = False) -> dict[str, int]:
    """Counter array -> ``{name: value}``, optionally only the non-zero ones."""
    return {n: int(arr[i]) for i, n in enumerate(NAMES) if not nonzero or arr[i]}


def diff(actual: dict[str, int], expected: dict[str, int]) -> dict[str, tuple[int, int]]:
    """``{name: (expected, actual)}`` for every counter that differs.

    Counters missing from ``expected`` are expected to be 0.
    """
    out = {}
    for n in sorted(set(actual) | set(expected)):
        e, a = expected.get(n, 0), actual.get(n, 0)
        if e != a:
            out[n] = (e, a)
    return out


# -- Why the data plane drops a packet -----------------------------------------
#
# Each compiled stage writes, per packet, where it goes next and, when it is
# dropped (or answered with an ICMP error instead of forwarded), an error code:
# an index into this table.  One accounting function (``dataplane.account``)
# adds what a code counts: each stem's ``-bytes`` (the packet's length) and
# ``-packets`` counters, or the counter itself if the stem is a whole name, and
# the ``drop-all-ipvX-iface-*`` totals of its side.  ``kind`` says what the code is
# about: "in", a received packet that does not go through; "out", a packet the
# lwAFTR made (an ICMP error, a reply, a fragment) that does not leave.
#
# (code name, stems, side whose drop-all totals it adds to (4, 6 or 0), kind, why)
ERRORS: tuple[tuple[str, tuple[str, ...], int, str, str], ...] = (
    ("none", (), 0, "in", "not dropped"),
    ("no-dest-softwire", ("drop-no-dest-softwire-ipv4",), 4, "in",
     "RFC 7596 5.2: no softwire owns the destination address and port (ICMPv4 host unreachable sent)"),
    ("no-dest-softwire-no-error", ("drop-no-dest-softwire-ipv4", "drop-out-by-policy-icmpv4-packets"), 4, "in",
     "RFC 7596 5.2, with generate-icmp-errors off (or ICMP for no softwire, likewise)"),
    ("icmpv4-no-softwire", ("drop-no-dest-softwire-ipv4", "drop-in-by-rfc7596-icmpv4"), 4, "in",
     "RFC 7596 8.1: ICMPv4 whose identifier or quoted port points to no softwire, dropped silently"),
    ("icmpv4-policy", ("drop-in-by-policy-icmpv4",), 4, "in", "external allow-incoming-icmp false"),
    ("icmpv4-bad-checksum", ("drop-bad-checksum-icmpv4",), 4, "in", "RFC 5508: ICMPv4 cut short or with a bad checksum"),
    ("ttl-zero", ("drop-ttl-zero-ipv4",), 4, "in", "RFC 791: TTL reaches 0 (ICMPv4 time exceeded sent)"),
    ("ttl-zero-no-error", ("drop-ttl-zero-ipv4", "drop-out-by-policy-icmpv4-packets"), 4, "in",
     "TTL reaches 0, generate-icmp-errors off"),
    ("over-mtu-df", ("drop-over-mtu-but-dont-fragment-ipv4",), 4, "in",
     "RFC 2473 7.2: too big for the tunnel with DF set (ICMPv4 fragmentation needed sent)"),
    ("over-mtu-df-no-error", ("drop-over-mtu-but-dont-fragment-ipv4", "drop-out-by-policy-icmpv4-packets"), 4, "in",
     "too big for the tunnel with DF set, generate-icmp-errors off"),
    ("no-source-softwire", ("drop-no-source-softwire-ipv6",), 6, "in",
     "RFC 7596 5.1: the B4's IPv6 source, IPv4 source and port match no softwire (ICMPv6 1/5 sent)"),
    ("no-source-softwire-no-error", ("drop-no-source-softwire-ipv6", "drop-out-by-policy-icmpv6-packets"), 6, "in",
     "RFC 7596 5.1, generate-icmp-errors off"),
    ("icmpv6-policy", ("drop-in-by-policy-icmpv6",), 6, "in", "internal allow-incoming-icmp false"),
    ("icmpv6-unknown", ("drop-unknown-protocol-icmpv6",), 6, "in",
     "ICMPv6 the lwAFTR does not handle (echo not for it, informational types)"),
    ("icmpv6-too-big-code", ("drop-too-big-type-but-not-code-icmpv6",), 6, "in",
     "RFC 4443 3.2: packet too big with a code other than 0"),
    ("icmpv6-time-code", ("drop-over-time-but-not-hop-limit-icmpv6",), 6, "in",
     "RFC 4443 3.3: time exceeded that is not hop limit exceeded"),
    ("ingress-filter-ipv4", ("drop-ingress-filter-ipv4-packets",), 0, "in", "refused by the external ingress-filter"),
    ("ingress-filter-ipv6", ("drop-ingress-filter-ipv6-packets",), 0, "in", "refused by the internal ingress-filter"),
    ("wrong-vlan", ("drop-wrong-vlan-packets",), 0, "in", "IEEE 802.1Q: without the interface's VLAN tag"),
    ("egress-filter-ipv4", ("drop-egress-filter-ipv4-packets",), 0, "out", "refused by the external egress-filter"),
    ("egress-filter-ipv6", ("drop-egress-filter-ipv6-packets",), 0, "out", "refused by the internal egress-filter"),
    ("over-rate-limit-icmpv4", ("drop-over-rate-limit-icmpv4",), 0, "out",
     "RFC 1812 4.3.2.8: ICMPv4 error over the configured rate"),
    ("over-rate-limit-icmpv6", ("drop-over-rate-limit-icmpv6",), 0, "out",
     "RFC 4443 2.4(f): ICMPv6 error over the configured rate"),
    ("pool-exhausted", ("drop-pool-exhausted-packets",), 0, "out", "no free packet slot for a packet's fragments"),
    ("frag-invalid-ipv4", ("drop-ipv4-frag-invalid-reassembly",), 0, "in",
     "RFC 791 3.2: a reassembly that cannot complete (overlap, too many fragments, too big, timed out)"),
    ("frag-invalid-ipv6", ("drop-ipv6-frag-invalid-reassembly",), 0, "in",
     "RFC 8200 4.5: a reassembly that cannot complete (overlap, too many fragments, too big, timed out)"),
    ("frag-evicted-ipv4", ("drop-ipv4-frag-random-evicted",), 0, "in",
     "a reassembly evicted at random for a new one (max-reassembly-packets)"),
    ("frag-evicted-ipv6", ("drop-ipv6-frag-random-evicted",), 0, "in",
     "a reassembly evicted at random for a new one (max-reassembly-packets)"),
    ("malformed-ipv4", ("drop-malformed-ipv4",), 0, "in", "RFC 791: bad version, IHL, lengths or header checksum"),
    ("malformed-ipv6", ("drop-malformed-ipv6",), 0, "in", "RFC 8200: bad version or lengths"),
    ("over-budget", ("drop-over-budget-packets",), 0, "in",
     "beyond the per-batch budget for work costlier than the common path"),
    ("unclassified", ("drop-unclassified-packets",), 0, "in", "taken by no stage (none should be: a defect)"),
    ("malformed-ipv6-internal", ("drop-malformed-ipv6",), 6, "in",
     "RFC 8200, RFC 791: from a B4, an IPv6 header with a bad version, ICMPv6 cut short (or an error quoting "
     "too little to relay), or IPv4-in-IPv6 whose IPv4 header is malformed (version, IHL, cut short)"),
    ("malformed-ipv4-external", ("drop-malformed-ipv4",), 4, "in",
     "RFC 791: IPv4 from the Internet with a bad version, a total length below its IHL or a bad header checksum"),
    # A hairpinned packet (RFC 7596 7: decapsulated from a B4, to another softwire) that is
    # dropped: its reason's counters get the IPv4 packet's length (these codes, side 0), and
    # "hairpinned" adds the IPv6 side's totals for the IPv6 packet it came in as (40 bytes more):
    # account(code, n) and account(E_HAIRPINNED, n + 40).  ICMPv4 errors addressed to a
    # softwire's address are hairpinned too, and dropped likewise.
    ("hairpin-no-dest-softwire", ("drop-no-dest-softwire-ipv4",), 0, "in",
     "RFC 7596 5.2, hairpinned: no softwire owns its destination (ICMPv4 host unreachable hairpinned back)"),
    ("hairpin-no-dest-softwire-no-error", ("drop-no-dest-softwire-ipv4", "drop-out-by-policy-icmpv4-packets"), 0,
     "in", "RFC 7596 5.2, hairpinned, generate-icmp-errors off (or ICMP for no softwire, likewise)"),
    ("hairpin-icmpv4-no-softwire", ("drop-no-dest-softwire-ipv4", "drop-in-by-rfc7596-icmpv4"), 0, "in",
     "RFC 7596 8.1, hairpinned: ICMPv4 whose identifier or quoted port points to no softwire, dropped silently"),
    ("hairpin-icmpv4-policy", ("drop-in-by-policy-icmpv4",), 0, "in",
     "external allow-incoming-icmp false, for an ICMPv4 error hairpinned to a softwire"),
    ("hairpin-ttl-zero", ("drop-ttl-zero-ipv4",), 0, "in",
     "RFC 791, hairpinned: TTL reaches 0 (ICMPv4 time exceeded hairpinned back)"),
    ("hairpin-ttl-zero-no-error", ("drop-ttl-zero-ipv4", "drop-out-by-policy-icmpv4-packets"), 0, "in",
     "TTL reaches 0, hairpinned, generate-icmp-errors off"),
    ("hairpin-over-mtu-df", ("drop-over-mtu-but-dont-fragment-ipv4",), 0, "in",
     "RFC 2473 7.2, hairpinned: too big for the tunnel with DF set (ICMPv4 fragmentation needed hairpinned back)"),
    ("hairpin-over-mtu-df-no-error", ("drop-over-mtu-but-dont-fragment-ipv4", "drop-out-by-policy-icmpv4-packets"),
     0, "in", "too big for the tunnel with DF set, hairpinned, generate-icmp-errors off"),
    ("hairpinned", (), 6, "in",
     "with a hairpin-* code: the IPv6 side's drop totals for the IPv6 packet a dropped hairpinned one came in as"),
    ("misplaced-not-ipv4", ("drop-misplaced-not-ipv4",), 4, "in",
     "on the IPv4 interface, neither IPv4 nor ARP (or shorter than an Ethernet header)"),
    ("misplaced-not-ipv6", ("drop-misplaced-not-ipv6",), 6, "in",
     "on the IPv6 interface, not IPv6 (or shorter than an Ethernet header)"),
    ("unknown-protocol-ipv6", ("drop-unknown-protocol-ipv6",), 6, "in",
     "from a B4, neither IPv4 (after a Tunnel Encapsulation Limit option at most) nor ICMPv6"),
    ("hairpin-fragment", ("drop-ipv4-frag-disabled",), 0, "in",
     "hairpinned: a decapsulated IPv4 fragment for another softwire (only the Internet side's are reassembled, as "
     "in Snabb)"),
    ("hairpin-icmpv4-bad-checksum", ("drop-bad-checksum-icmpv4",), 0, "in",
     "RFC 5508, hairpinned: ICMPv4 cut short or with a bad checksum"),
)

ERROR_NAMES: tuple[str, ...] = tuple(e[0] for e in ERRORS)
N_ERRORS: int = len(ERRORS)
#: Most counters one error code adds to (stems expanded, drop-all totals included).
ERROR_WIDTH = 6


def _error_counters(stems: tuple[str, ...], side: int) -> list[tuple[int, bool]]:
    """(counter index, counts bytes) pairs one error code adds to."""
    out = []
    for stem in stems:
        if stem in INDEX:
            out.append((INDEX[stem], stem.endswith("-bytes")))
            continue
        parts = [(INDEX[stem + s], s == "-bytes") for s in ("-bytes", "-packets") if stem + s in INDEX]
        if not parts:
            raise ValueError(f"error stem {stem!r} names no counter")
        out += parts
    if side:
        out += [(INDEX[f"drop-all-ipv{side}-iface-bytes"], True), (INDEX[f"drop-all-ipv{side}-iface-packets"], False)]
    return out


def _error_arrays() -> tuple[np.ndarray, np.ndarray]:
    idx = np.full((N_ERRORS, ERROR_WIDTH), -1, np.int64)
    by_bytes = np.zeros((N_ERRORS, ERROR_WIDTH), np.uint8)
    for code, (_name, stems, side, _kind, _why) in enumerate(ERRORS):
        for j, (i, b) in enumerate(_error_counters(stems, side)):
            idx[code, j] = i
            by_bytes[code, j] = b
    return idx, by_bytes


#: For code k: the counters it adds to (ERROR_COUNTERS[k], -1 padded) and
#: whether each gets the packet's length (ERROR_BYTES[k]) or 1.
ERROR_COUNTERS, ERROR_BYTES = _error_arrays()

# Module-level int constants for the codes, e.g. E_NO_DEST_SOFTWIRE.
for _i, _n in enumerate(ERROR_NAMES):
    globals()["E_" + _const_name(_n)] = _i
del _i, _n


def account(counters: np.ndarray, code: int, packets: int, nbytes: int) -> None:
    """Count ``packets`` dropped with ``code`` (``nbytes`` in all), from Python:
    what :func:`lwaftr.dataplane.account.account` adds for each of them."""
    for i, by_bytes in _error_counters(ERRORS[code][1], ERRORS[code][2]):
        counters[i] += nbytes if by_bytes else packets


def error_counts(code: int, nbytes: int) -> dict[str, int]:
    """What one packet of ``nbytes`` dropped with ``code`` adds, by counter name."""
    out: dict[str, int] = {}
    for i, b in _error_counters(ERRORS[code][1], ERRORS[code][2]):
        out[NAMES[i]] = out.get(NAMES[i], 0) + (nbytes if b else 1)
    return out
