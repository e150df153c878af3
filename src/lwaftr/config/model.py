"""The one internal configuration model.

Every configuration source maps onto these types: ``snabb-softwire-v3`` files
(``lwaftr.config.snabb``), RFC 8676 ``ietf-softwire-br`` XML and JSON
(``lwaftr.config.ietf``) and the text binding-table file.  The model is plain data: no I/O, no YANG.

Addresses are kept in wire form (``bytes``: 4 for IPv4, 16 for IPv6, 6 for
MAC) so the data plane can compare them with packet bytes directly.  The
binding table is kept as a struct of numpy arrays (:class:`Bindings`), never
one Python object per softwire, so a million-entry table stays cheap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class NextHop:
    """Where to send: a static MAC, or an IP to resolve (ARP / NDP)."""
    mac: bytes | None = None
    ip: bytes | None = None


@dataclass(frozen=True)
class InterfaceAddresses:
    """Per-instance addresses of one side (``instance/queue/*-interface``)."""
    ip: bytes
    mac: bytes
    next_hop: NextHop
    vlan_tag: int | None = None


@dataclass(frozen=True)
class Instance:
    """One lwAFTR instance: a device (or device pair) and its addresses."""
    device: str
    external_device: str | None
    queue_id: int
    external: InterfaceAddresses
    internal: InterfaceAddresses


@dataclass(frozen=True)
class InterfacePolicy:
    """Shared settings of one side (``softwire-config/{external,internal}-interface``)."""
    mtu: int
    mru: int = 1460
    ingress_filter: str | None = None
    egress_filter: str | None = None
    allow_incoming_icmp: bool = True
    generate_icmp_errors: bool = True
    vlan_tag: int | None = None
    error_rate_limit_packets: int = 200
    error_rate_limit_period: int = 2
    reassembly_max_fragments_per_packet: int = 20
    reassembly_max_packets: int = 20000
    # internal-interface only:
    flow_label: int = 0
    hairpinning: bool = True


@dataclass(frozen=True, eq=False)
class TableVersion:
    """Which binding table this is (snabb ``binding-table/version``, RFC 8676
    ``binding-table-versioning``): a number and/or an RFC 3339 date-and-time.

    Dates compare as instants: libyang writes them in UTC
    (``2026-11-29T06:00:00+01:00`` comes back as ``...T05:00:00+00:00``)."""
    number: int | None = None
    date: str | None = None

    def _key(self) -> tuple:
        try:
            instant: object = datetime.fromisoformat(self.date) if self.date else None
        except ValueError:
            instant = self.date
        return self.number, instant

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TableVersion):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(eq=False)
class Bindings:
    """The binding table as a struct of arrays, one row per softwire.

    ``ipv4`` is the host-order uint32 address; ``b4_ipv6`` rows are the 16
    wire bytes; ``br_index`` indexes ``br_addresses``.  ``line`` is the source
    line of each softwire (0 if unknown), for error messages.
    """
    ipv4: np.ndarray             # uint32[n]
    psid: np.ndarray             # uint16[n]
    psid_length: np.ndarray      # uint8[n]
    reserved_ports_bit_count: np.ndarray  # uint8[n]
    b4_ipv6: np.ndarray          # uint8[n, 16]
    br_index: np.ndarray         # uint16[n]
    br_addresses: list[bytes] = field(default_factory=list)
    line: np.ndarray | None = None  # int32[n]
    version: TableVersion | None = None

    def __len__(self) -> int:
        return int(self.ipv4.shape[0])

    def __eq__(self, other: object) -> bool:
        """Same softwires in the same order, each with the same BR address.

        ``line`` (provenance) and the numbering of ``br_addresses`` are ignored.
        """
        if not isinstance(other, Bindings):
            return NotImplemented
        return (len(self) == len(other) and self.version == other.version
                and all(np.array_equal(getattr(self, f), getattr(other, f))
                        for f in ("ipv4", "psid", "psid_length", "reserved_ports_bit_count", "b4_ipv6"))
                and np.array_equal(self.br_rows(), other.br_rows()))

    __hash__ = None  # type: ignore[assignment]

    def br_rows(self) -> np.ndarray:
        """The BR address of every softwire, uint8[n, 16]."""
        table = np.frombuffer(b"".join(self.br_addresses), np.uint8).reshape(-1, 16)
        return table[self.br_index] if len(self) else np.zeros((0, 16), np.uint8)

    @classmethod
    def empty(cls) -> "Bindings":
        return cls(np.zeros(0, np.uint32), np.zeros(0, np.uint16), np.zeros(0, np.uint8),
                   np.zeros(0, np.uint8), np.zeros((0, 16), np.uint8), np.zeros(0, np.uint16),
                   [], np.zeros(0, np.int32))


#: Control-plane modes (``lwaftr { control-plane { mode ...; } }``).
KERNEL = "kernel"        # bump in the wire: the Linux kernel answers, through a TAP per interface
BUILT_IN = "built-in"    # Snabb's way: built-in ARP/NDP/echo responders, no TAP


@dataclass(frozen=True)
class ControlPlane:
    """How ``lwaftr run`` treats what is not lwAFTR work (our extension; Snabb has none).

    ``KERNEL``: ARP, NDP, ping and any traffic to the router's own addresses
    go to a TAP interface per data interface, the kernel answers through it,
    and next-hop MACs come from the kernel's neighbour table (refreshed every
    ``next_hop_refresh_interval`` seconds and on netlink events).  The TAPs
    get the instance's addresses with these prefix lengths.  ``check`` and
    ``bench`` always use the built-in responders.
    """
    mode: str = KERNEL
    answer_arp_for_softwires: bool = False
    external_prefix_length: int = 32
    internal_prefix_length: int = 128
    next_hop_refresh_interval: float = 1.0


#: An announced prefix: (network address in wire form, prefix length).
Prefix = tuple[bytes, int]


@dataclass(frozen=True)
class BgpPeer:
    """Per-instance settings of the BGP sessions (``lwaftr { bgp { peer { ... } } }``),
    for the instances on ``device``.  Absent addresses: the instance's next hop
    on that side; absent AS numbers: :attr:`Bgp.peer_as`."""
    device: str
    ipv4_address: bytes | None = None
    ipv4_peer_as: int | None = None
    ipv6_address: bytes | None = None
    ipv6_peer_as: int | None = None


@dataclass(frozen=True)
class Bgp:
    """BGP announcements by BIRD 2 (:mod:`lwaftr.routing.bird`; our extension).

    With ``enable``, a supervised ``lwaftr run`` runs BIRD with one session per
    worker interface, from the TAP's address to the peer (default: the next
    hop), announcing ``ipv4_prefixes`` on the IPv4 side (default: the
    softwires' addresses, aggregated) and ``ipv6_prefixes`` on the IPv6 side
    (default: the BR addresses as /128s), next hop self, only while the TAP
    is up.  Short timers (and optionally BFD) make a dead worker's routes go
    within seconds."""
    enable: bool = False
    local_as: int | None = None
    peer_as: int | None = None
    hold_time: int = 3
    keepalive_time: int = 1
    bfd: bool = False
    bfd_interval: float = 0.1            # seconds between BFD packets (both ways)
    bfd_multiplier: int = 3
    ipv4_prefixes: tuple[Prefix, ...] = ()
    ipv6_prefixes: tuple[Prefix, ...] = ()
    peers: tuple[BgpPeer, ...] = ()

    def peer(self, device: str) -> BgpPeer:
        """The settings for the instances on ``device`` (defaults if none given)."""
        for p in self.peers:
            if p.device == device:
                return p
        return BgpPeer(device)

    def problem(self, instances: list["Instance"]) -> tuple[str, str] | None:
        """What is wrong with these settings for ``instances``, as (leaf under
        ``bgp``, message), or None (for the loaders, which say where)."""
        devices = {i.device for i in instances}
        for p in self.peers:
            if p.device not in devices:
                return "peer/device", f"bgp peer for device {p.device!r}: no instance has that device"
        if self.keepalive_time >= self.hold_time:
            return "keepalive-time", (f"keepalive-time {self.keepalive_time} must be shorter than "
                                      f"hold-time {self.hold_time}")
        if not self.enable:
            return None
        if self.local_as is None:
            return "local-as", "bgp is enabled: 'local-as' is required"
        if self.peer_as is None:
            lacking = sorted({i.device for i in instances for p in [self.peer(i.device)]
                              if (p.ipv4_peer_as is None and (p.ipv4_address or i.external.next_hop.ip))
                              or (p.ipv6_peer_as is None and (p.ipv6_address or i.internal.next_hop.ip))})
            if lacking:
                return "peer-as", (f"bgp is enabled: no peer AS for device(s) {', '.join(lacking)} (give "
                                   f"bgp/peer-as, or a peer entry with ipv4-peer-as and ipv6-peer-as)")
        return None


@dataclass(frozen=True)
class Ospf:
    """OSPF announcements by BIRD 2 (:mod:`lwaftr.routing.bird`; our extension), the
    alternative to :class:`Bgp` for networks that carry the lwAFTR's addresses in
    their IGP.

    With ``enable``, a supervised ``lwaftr run`` runs in BIRD one OSPFv2 and one
    OSPFv3 router per worker (router ID: the worker's IPv4 address), each on the
    worker's TAPs as point-to-point interfaces in ``area``, announcing as
    external routes the softwires' IPv4 prefixes (OSPFv2, on the IPv4 side) and
    the BR addresses (OSPFv3, on the IPv6 side) while the TAP is up.  A dead
    worker's routes go when its neighbours' dead interval expires."""
    enable: bool = False
    area: int = 0
    hello_interval: int = 1              # seconds
    dead_interval: int = 4               # seconds
    cost: int = 10

    def problem(self) -> tuple[str, str] | None:
        """What is wrong with these settings, as (leaf under ``ospf``, message), or None."""
        if self.dead_interval <= self.hello_interval:
            return "dead-interval", (f"dead-interval {self.dead_interval} must be longer than "
                                     f"hello-interval {self.hello_interval}")
        return None


@dataclass
class Config:
    """A whole lwAFTR configuration."""
    external: InterfacePolicy
    internal: InterfacePolicy
    bindings: Bindings
    instances: list[Instance]
    name: str | None = None
    control_plane: ControlPlane = field(default_factory=ControlPlane)
    source: str | None = field(default=None, compare=False)   # file it was loaded from
    #: the binding-table file an RFC 8676 configuration names (lwx:binding-table-file),
    #: resolved; None when the softwires are in the configuration itself
    binding_table_file: str | None = field(default=None, compare=False)
    #: BGP announcements (our extension; off by default)
    bgp: Bgp = field(default_factory=Bgp)
    #: OSPF announcements (our extension; off by default)
    ospf: Ospf = field(default_factory=Ospf)
    #: Cores for the workers, one each in the order of the instances and their
    #: queues (our extension; empty: each worker on a core of its interface's
    #: NUMA node, see lwaftr.io.placement)
    cpus: tuple[int, ...] = ()

    @property
    def instance(self) -> Instance:
        """The first (in check/bench: the only) instance."""
        return self.instances[0]
