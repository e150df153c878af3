"""The demo lab: an lwAFTR between an Internet host and lwB4s, in namespaces.

Lab only (``lwaftr demo`` and the end-to-end tests), not part of the router.
Documentation addresses only (RFC 5737, RFC 3849)::

   inet                 aftr                    r6                  b4-alice ── lan-alice
   203.0.113.7 ─── v4 [lwaftr run] v6 ─── 2001:db8:ffff::fe ─┬── 2001:db8:1::a   198.51.100.16/28
                   203.0.113.1  BR 2001:db8:ffff::1          ├── b4-bob ── lan-bob
                                                             │   2001:db8:1::b    198.51.100.32/28
                                                             └── b4-carol ── lan-carol
                                                                 2001:db8:1::c    198.51.100.48/28

* ``inet``: the Internet host (and the lwAFTR's IPv4 next hop), 203.0.113.7.
* ``aftr``: the lwAFTR, ``lwaftr run --v4 v4 --v6 v6``, or on a stick
  (``--on-a-stick stick``), its one veth then plugged into a bridge in a
  ``sw`` namespace together with ``inet`` and ``r6``.  Its veths are in
  promiscuous mode, with ARP off and IPv6 disabled, so only the lwAFTR
  answers on them (its data-plane MACs are the instance MACs of the config).
* ``r6``: an IPv6 router, the lwAFTR's internal next hop; it routes to each
  B4 address over that B4's own link, and to the BR address.
* ``b4-NAME``: an lwB4: a user-space tunnel (:mod:`lwaftr.lab.b4tunnel`,
  TUN ``t4`` <-> raw IPv6 socket to the BR) and nftables NAPT of its LAN to
  the subscriber's public address and port set.  alice and bob share
  192.0.2.1 (PSIDs 1 and 2 of length 4: ports 4096-8191 and 8192-12287);
  carol owns 192.0.2.2 whole and is *not* in the initial configuration (a
  reload adds her).  alice forwards port 4242 (TCP and UDP) to her LAN host.
* ``lan-NAME``: a host behind each B4.

Access links (``aftr``-``r6``, ``r6``-B4s) have MTU 1540, room for a
1500-byte IPv4 packet in IPv6; the lwAFTR's internal MTU is 1500 by default,
so it fragments (or refuses, DF) 1500-byte packets from the Internet.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwaftr.lab.netns import Lab, LabError, Netns, Process

BR = "2001:db8:ffff::1"              # the lwAFTR's B4-facing address (BR)
ROUTER6 = "2001:db8:ffff::fe"        # its internal next hop: the IPv6 router
AFTR_V4 = "203.0.113.1"              # the lwAFTR's Internet-facing address
INTERNET = "203.0.113.7"             # the Internet host, also the lwAFTR's IPv4 next hop
MAC_V4 = "02:00:00:00:00:01"         # instance MACs (external, internal)
MAC_V6 = "02:00:00:00:00:02"
ACCESS_MTU = 1540                    # 1500-byte IPv4 + 40 bytes of IPv6
PORT_FORWARD = 4242                  # alice's port forward (TCP and UDP) to her LAN host

TWO_INTERFACES = "two-interfaces"
ON_A_STICK = "on-a-stick"
MODES = (TWO_INTERFACES, ON_A_STICK)


@dataclass(frozen=True)
class Subscriber:
    name: str
    ipv4: str               # public address (maybe shared)
    psid: int
    psid_length: int
    b4: str                 # B4 IPv6 address: the softwire's b4-ipv6
    wan: str                # the router <-> B4 link, a /64 (router ::1, B4 ::2)
    lan: str                # the LAN behind the B4, a /28 (B4 .1, host .2)
    initially_configured: bool = True
    port_forward: int | None = None   # a TCP+UDP port of the set forwarded to the LAN host

    @property
    def shift(self) -> int:
        return 16 - self.psid_length        # no reserved ports

    @property
    def ports(self) -> tuple[int, int]:
        """First and last port of the port set (contiguous: the PSID is the top bits)."""
        first = self.psid << self.shift if self.psid_length else 0
        return first, first + (1 << self.shift) - 1

    @property
    def b4_wan(self) -> str:
        return self.wan + "2"

    @property
    def router_wan(self) -> str:
        return self.wan + "1"

    @property
    def lan_gateway(self) -> str:
        return str(ipaddress.IPv4Address(self.lan) + 1)

    @property
    def host(self) -> str:
        """The LAN host's address."""
        return str(ipaddress.IPv4Address(self.lan) + 2)

    def owns(self, ipv4: str, port: int) -> bool:
        first, last = self.ports
        return ipv4 == self.ipv4 and first <= port <= last


SUBSCRIBERS = (
    Subscriber("alice", "192.0.2.1", 1, 4, "2001:db8:1::a", "2001:db8:a::", "198.51.100.16",
               port_forward=PORT_FORWARD),
    Subscriber("bob", "192.0.2.1", 2, 4, "2001:db8:1::b", "2001:db8:b::", "198.51.100.32"),
    Subscriber("carol", "192.0.2.2", 0, 0, "2001:db8:1::c", "2001:db8:c::", "198.51.100.48",
               initially_configured=False),
)


def check_port_sets(subscribers=SUBSCRIBERS) -> None:
    """The NAT ranges we give nftables are exactly what the lwAFTR's
    ``psid_of`` maps to each PSID (first and last port in, neighbours out)."""
    from lwaftr.bindingtable.table import psid_of
    f = getattr(psid_of, "py_func", psid_of)          # no need to compile it for this
    for s in subscribers:
        first, last = s.ports
        assert f(s.psid_length, s.shift, first) == s.psid and f(s.psid_length, s.shift, last) == s.psid, s
        if s.psid_length:
            assert first == 0 or f(s.psid_length, s.shift, first - 1) != s.psid, s
            assert last == 0xFFFF or f(s.psid_length, s.shift, last + 1) != s.psid, s


def nat_rules(s: Subscriber) -> str:
    """nftables for a B4: NAPT of its LAN into its address and port set on
    the tunnel; its port forward; no tunnel-to-tunnel forwarding."""
    first, last = s.ports
    to = s.ipv4 if s.psid_length == 0 else f"{s.ipv4}:{first}-{last}"
    rules = [
        "table ip lwb4 {",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "t4" meta l4proto {{ tcp, udp, icmp }} snat to {to}',
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
    ]
    if s.port_forward is not None:
        assert s.owns(s.ipv4, s.port_forward)
        rules += [f'    iifname "t4" tcp dport {s.port_forward} dnat to {s.host}',
                  f'    iifname "t4" udp dport {s.port_forward} dnat to {s.host}']
    rules += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        '    iifname "t4" oifname "t4" drop',
        "  }",
        "}",
    ]
    return "\n".join(rules) + "\n"


class Topology:
    """Builds the lab in a :class:`~lwaftr.lab.netns.Lab` and drives the lwAFTR in it."""

    def __init__(self, lab: Lab, mode: str = TWO_INTERFACES, subscribers=SUBSCRIBERS,
                 internal_mtu: int = 1500, external_mtu: int = 1500, generate_icmp_errors: bool = True,
                 control_plane: str | None = None, io: str | None = None) -> None:
        """``control_plane``: ``lwaftr run --control-plane`` (``kernel`` or
        ``built-in``); None: the configuration's default.  ``io``: ``lwaftr
        run --io`` (``afpacket`` or ``xdp``); None: its default.  The lab works with
        either: next hops are IP addresses on the lab's links, and nothing
        but the lwAFTR answers on its interfaces."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.lab = lab
        self.mode = mode
        self.subscribers = {s.name: s for s in subscribers}
        self.configured = {s.name for s in subscribers if s.initially_configured}
        self.internal_mtu, self.external_mtu = internal_mtu, external_mtu
        self.generate_icmp_errors = generate_icmp_errors
        self.control_plane = control_plane
        self.io = io
        self.conf_path = lab.workdir / "lwaftr.conf"
        self.lwaftr: Process | None = None
        self.b4: dict[str, Netns] = {}
        self.lan: dict[str, Netns] = {}
        self.tunnels: dict[str, Process] = {}
        self.runs: list[dict] = []          # counters of every lwaftr run so far

    # -- building ----------------------------------------------------------
    def build(self) -> "Topology":
        check_port_sets(self.subscribers.values())
        lab = self.lab
        self.inet = lab.netns("inet")
        self.aftr = lab.netns("aftr")
        self.router = lab.netns("r6")
        for s in self.subscribers.values():
            self.b4[s.name] = lab.netns(f"b4-{s.name}")
            self.lan[s.name] = lab.netns(f"lan-{s.name}")
        self.switch = lab.netns("sw") if self.mode == ON_A_STICK else None

        # sysctls first: interfaces made afterwards inherit the "default" ones
        for ns in [self.inet, self.router, *self.b4.values(), *self.lan.values()]:
            ns.quiet_ipv6()
        for ns in (self.inet, *self.lan.values()) + ((self.switch,) if self.switch else ()):
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        # The lwAFTR's data veths are born without IPv6 (they never send RS, MLD
        # or DAD); anything made later in its namespace (a TAP, say) has IPv6.
        self.aftr.quiet_ipv6()
        self.aftr.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        self.router.sysctl("net.ipv6.conf.all.forwarding", 1)
        for ns in self.b4.values():
            ns.sysctl("net.ipv4.ip_forward", 1)

        self._links()
        self._internet()
        self._router()
        tunnels = {s.name: self._b4_start(s) for s in self.subscribers.values()}
        for s in self.subscribers.values():
            self._b4_finish(s, tunnels[s.name])
            self._lan(s)
        self.write_config()
        return self

    def _links(self) -> None:
        lab = self.lab
        if self.mode == TWO_INTERFACES:
            lab.veth(self.inet, "eth0", self.aftr, "v4", mtu=self.external_mtu)
            lab.veth(self.router, "to-aftr", self.aftr, "v6", mtu=ACCESS_MTU)
            self.data_ifaces = ("v4", "v6")
        else:
            sw = self.switch
            sw.ip("link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
            lab.veth(self.aftr, "stick", sw, "p0", mtu=ACCESS_MTU)
            lab.veth(self.inet, "eth0", sw, "p1", mtu=ACCESS_MTU)
            lab.veth(self.router, "to-aftr", sw, "p2", mtu=ACCESS_MTU)
            self.inet.link_up("eth0", mtu=self.external_mtu)
            for p in ("p0", "p1", "p2"):
                sw.ip("link", "set", "dev", p, "master", "br0")
            sw.link_up("br0", mtu=ACCESS_MTU)
            self.data_ifaces = ("stick",)
        for dev in self.data_ifaces:        # only the lwAFTR answers on its wires
            self.aftr.ip("link", "set", "dev", dev, "promisc", "on", "arp", "off")
            self.aftr.sysctl(f"net.ipv6.conf.{dev}.disable_ipv6", 1)
        self.aftr.sysctl("net.ipv6.conf.default.disable_ipv6", 0)
        for s in self.subscribers.values():
            lab.veth(self.router, f"to-{s.name}"[:15], self.b4[s.name], "wan", mtu=ACCESS_MTU)
            lab.veth(self.b4[s.name], "lan", self.lan[s.name], "eth0", mtu=1500)

    def _internet(self) -> None:
        ns = self.inet
        ns.addr("eth0", f"{INTERNET}/24")
        for s in {s.ipv4 for s in self.subscribers.values()}:
            ns.route(f"{s}/32", AFTR_V4)
        ns.ethtool_tx_off("eth0")

    def _router(self) -> None:
        r = self.router
        r.addr("to-aftr", f"{ROUTER6}/64")                       # the BR address is on this link
        r.ethtool_tx_off("to-aftr")
        for s in self.subscribers.values():
            dev = f"to-{s.name}"[:15]
            r.addr(dev, f"{s.router_wan}/64")
            r.route(f"{s.b4}/128", s.b4_wan, dev)           # route to each B4 address
            r.ethtool_tx_off(dev)

    def _b4_start(self, s: Subscriber) -> Process:
        ns = self.b4[s.name]
        ns.addr("wan", f"{s.b4_wan}/64")
        ns.addr("lo", f"{s.b4}/128")
        ns.route("default", s.router_wan, "wan")
        ns.addr("lan", f"{s.lan_gateway}/28")
        for dev in ("wan", "lan"):
            ns.ethtool_tx_off(dev)
        p = ns.popen(sys.executable, "-m", "lwaftr.lab.b4tunnel", "--tun", "t4", "--b4", s.b4, "--br", BR,
                     label=f"b4tunnel-{s.name}")
        self.tunnels[s.name] = p
        return p

    def _b4_finish(self, s: Subscriber, tunnel: Process) -> None:
        ns = self.b4[s.name]
        tunnel.wait_for("^ready", timeout=30)
        ns.ip("route", "add", "default", "dev", "t4")
        ns.nft(nat_rules(s))

    def _lan(self, s: Subscriber) -> None:
        ns = self.lan[s.name]
        ns.addr("eth0", f"{s.host}/28")
        ns.route("default", s.lan_gateway)
        ns.ethtool_tx_off("eth0")

    # -- the lwAFTR's configuration ---------------------------------------
    def config(self, names: set[str] | None = None):
        """The lwAFTR configuration (a :class:`~lwaftr.config.model.Config`)
        with the softwires of ``names`` (default: those configured now)."""
        from lwaftr.config import model as M
        subs = [s for s in self.subscribers.values() if s.name in (self.configured if names is None else names)]
        n = len(subs)
        b = M.Bindings(
            ipv4=np.array([int(ipaddress.IPv4Address(s.ipv4)) for s in subs], np.uint32),
            psid=np.array([s.psid for s in subs], np.uint16),
            psid_length=np.array([s.psid_length for s in subs], np.uint8),
            reserved_ports_bit_count=np.zeros(n, np.uint8),
            b4_ipv6=np.array([list(ipaddress.IPv6Address(s.b4).packed) for s in subs], np.uint8).reshape(n, 16),
            br_index=np.zeros(n, np.uint16),
            br_addresses=[ipaddress.IPv6Address(BR).packed],
            line=np.zeros(n, np.int32),
        )
        mac = lambda m: bytes.fromhex(m.replace(":", ""))     # noqa: E731
        inst = M.Instance(
            device=self.data_ifaces[-1], external_device="v4" if self.mode == TWO_INTERFACES else None,
            queue_id=0,
            external=M.InterfaceAddresses(ipaddress.IPv4Address(AFTR_V4).packed, mac(MAC_V4),
                                          M.NextHop(ip=ipaddress.IPv4Address(INTERNET).packed)),
            internal=M.InterfaceAddresses(ipaddress.IPv6Address(BR).packed, mac(MAC_V6),
                                          M.NextHop(ip=ipaddress.IPv6Address(ROUTER6).packed)),
        )
        policy = dict(generate_icmp_errors=self.generate_icmp_errors)
        cfg = M.Config(external=M.InterfacePolicy(mtu=self.external_mtu, **policy),
                       internal=M.InterfacePolicy(mtu=self.internal_mtu, **policy),
                       bindings=b, instances=[inst], name=self.instance_name)
        if hasattr(cfg, "control_plane"):
            # The lab's prefixes, for a kernel control plane (its TAPs get the
            # instance's addresses with these lengths); built-in ignores them.
            cfg.control_plane = dataclasses.replace(cfg.control_plane, external_prefix_length=24,
                                                    internal_prefix_length=64)
        return cfg

    @property
    def instance_name(self) -> str:
        """The lwAFTR's instance name (its state directory): unique per lab,
        so labs can run side by side."""
        return f"lab-{self.lab.tag}"

    def write_config(self, names: set[str] | None = None, text: str | None = None) -> Path:
        """Write the configuration file ``lwaftr run`` reads (``text`` verbatim if given)."""
        from lwaftr.config.snabb import dump_snabb
        if names is not None:
            self.configured = set(names)
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(text if text is not None else dump_snabb(self.config()))
        tmp.replace(self.conf_path)
        return self.conf_path

    # -- running the lwAFTR ------------------------------------------------
    def lwaftr_argv(self) -> list[str]:
        ifaces = (["--v4", "v4", "--v6", "v6"] if self.mode == TWO_INTERFACES
                  else ["--on-a-stick", "stick"])
        cp = ["--control-plane", self.control_plane] if self.control_plane else []
        io = ["--io", self.io] if self.io else []
        return [sys.executable, "-m", "lwaftr", "run", "--conf", str(self.conf_path), *ifaces, *cp, *io]

    def start_lwaftr(self, timeout: float = 180) -> Process:
        """Start ``lwaftr run`` in ``aftr``; return once it says it is forwarding
        (the first start may compile numba kernels)."""
        if self.lwaftr is not None and self.lwaftr.alive():
            raise LabError("the lwAFTR is already running")
        self.lwaftr = self.aftr.popen(*self.lwaftr_argv(), label="lwaftr")
        self.lwaftr.wait_for(r"forwarding", timeout=timeout)
        return self.lwaftr

    def stop_lwaftr(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM; return the counters it prints (its nonzero ones)."""
        p = self.lwaftr
        if p is None:
            raise LabError("the lwAFTR is not running")
        self.lwaftr = None
        rc = p.stop(signal.SIGTERM, timeout)
        if rc != 0:
            raise LabError(f"lwaftr run exited {rc}:\n{p.stderr[-3000:]}")
        out = p.stdout
        try:
            counters = json.loads(out[out.index("{"):])
        except ValueError as e:
            raise LabError(f"no counters from lwaftr run: {out[-2000:]!r}\n{p.stderr[-2000:]}") from e
        self.runs.append(counters)
        return counters

    def restart_lwaftr(self) -> dict[str, int]:
        """Stop (returning the counters of that run) and start afresh."""
        counters = self.stop_lwaftr()
        self.start_lwaftr()
        return counters

    def reload(self, timeout: float = 60) -> bool:
        """SIGHUP; True once the configuration is reloaded, False if it is refused."""
        p = self.lwaftr
        mark = len(p.stderr)
        p.send_signal(signal.SIGHUP)
        return "reloaded" in p.wait_for(r"configuration reloaded|reload refused", timeout, after=mark)

    # -- small helpers for demos and tests --------------------------------
    def ping(self, name: str, dest: str = INTERNET, count: int = 3, deadline: float = 30) -> str:
        """Ping from ``name``'s LAN host until one answer (ARP/NDP and numba may
        take a moment at first), then ``count`` more; returns ping's summary."""
        ns = self.lan[name]
        ns.run("ping", "-n", "-c", "1", "-w", str(int(deadline)), dest, timeout=deadline + 10)
        r = ns.run("ping", "-n", "-c", str(count), "-i", "0.2", "-W", "5", dest, timeout=40)
        return r.stdout

    def close(self) -> None:
        if self.lwaftr is not None and self.lwaftr.alive():
            try:
                self.stop_lwaftr()
            except LabError:
                pass


def build(lab: Lab, mode: str = TWO_INTERFACES, **kw) -> Topology:
    """A built lab topology (the lwAFTR not yet started)."""
    return Topology(lab, mode, **kw).build()
