"""TAP interfaces for the kernel control plane, and quieting the data interfaces.

Each data interface gets a TAP carrying the instance's MAC and addresses, so
the Linux kernel of the lwAFTR's namespace answers ARP, NDP and ping for the
router and can run BGP, BFD or OSPF; :mod:`lwaftr.dataplane.control` decides
which received frames are the kernel's.  The data interface's own stack is
quietened (no ARP, no IPv6, no forwarding) so that only the TAP answers:
the interface is a wire, the TAP is the router's port.

TAP frames are few (control traffic), so they move with one ``read``/``write``
per frame, bounded per loop iteration; data frames never come here.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import struct
from pathlib import Path

from pyroute2 import IPRoute

log = logging.getLogger("lwaftr.io.tap")

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFA_F_NODAD = 0x02
NTF_EXT_MANAGED = 0x01   # the kernel keeps resolving this neighbour (Linux 5.16+)
IFNAMSIZ = 16


def tap_name(device: str, side: int | None = None) -> str:
    """The TAP for data interface ``device``: ``cp-`` + the name, cut to 15 bytes.
    On a stick each side has its own (own MAC, own addresses): ``cp4-``, ``cp6-``."""
    return (f"cp{side or ''}-" + device)[:IFNAMSIZ - 1]


class Tap:
    """One TAP device (it disappears when closed).

    ``multi_queue``: one queue of a multi-queue TAP that several workers of
    one interface open under the same name, each reading and writing its own
    queue (the kernel spreads what it sends over the queues by flow); the
    device disappears with its last queue."""

    def __init__(self, name: str, multi_queue: bool = False) -> None:
        self.name = name
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        except OSError:
            os.close(self.fd)
            raise
        self.dropped = 0

    def fileno(self) -> int:
        return self.fd

    def read(self, max_frames: int = 64) -> list[bytes]:
        """What the kernel sent, up to ``max_frames`` frames, without blocking."""
        out = []
        for _ in range(max_frames):
            try:
                out.append(os.read(self.fd, 65536))
            except BlockingIOError:
                break
        return out

    def write(self, frames: list[bytes]) -> int:
        """Hand frames to the kernel; returns how many it refused (queue full, down)."""
        refused = 0
        for f in frames:
            try:
                os.write(self.fd, f)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EIO, errno.ENOBUFS, errno.EINVAL):
                    raise
                refused += 1
        self.dropped += refused
        return refused

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _sysctl(path: str, value: str | None = None) -> str | None:
    """Read (and optionally write) ``/proc/sys/<path>``; None if absent."""
    p = Path("/proc/sys") / path
    try:
        old = p.read_text().strip()
        if value is not None and old != value:
            p.write_text(value)
        return old
    except OSError:
        return None


def configure_tap(ipr: IPRoute, name: str, mac: bytes, mtu: int, addresses: list[tuple[bytes, int]],
                  next_hop: bytes | None, *, ipv6: bool) -> int:
    """Give TAP ``name`` the instance's MAC, MTU and ``(address, prefix_length)``s,
    an on-link route to ``next_hop`` when no prefix covers it, and a managed
    neighbour entry for it (the kernel resolves it and keeps it fresh).
    Returns the TAP's ifindex."""
    idx = ipr.link_lookup(ifname=name)[0]
    if ipv6:
        for leaf, value in (("accept_ra", "0"), ("autoconf", "0"), ("accept_dad", "0")):
            _sysctl(f"net/ipv6/conf/{name}/{leaf}", value)
    else:
        _sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
    ipr.link("set", index=idx, address=":".join(f"{b:02x}" for b in mac), mtu=mtu)
    ipr.link("set", index=idx, state="up")
    nets = []
    for addr, plen in addresses:
        ip = ipaddress.ip_address(addr)
        kw = {"IFA_FLAGS": IFA_F_NODAD} if ip.version == 6 else {}
        try:
            ipr.addr("add", index=idx, address=str(ip), prefixlen=plen, **kw)
        except Exception as e:          # pyroute2 NetlinkError: EEXIST on a restart is fine
            if getattr(e, "code", None) != errno.EEXIST:
                raise
        nets.append(ipaddress.ip_network(f"{ip}/{plen}", strict=False))
    if next_hop is not None:
        nh = ipaddress.ip_address(next_hop)
        if not any(nh in n for n in nets):
            ipr.route("replace", dst=f"{nh}/{nh.max_prefixlen}", oif=idx, scope=253)   # scope link
        try:
            ipr.neigh("replace", dst=str(nh), ifindex=idx, state=0, NDA_FLAGS_EXT=NTF_EXT_MANAGED)
        except Exception as e:
            log.warning("kernel refused a managed neighbour entry for %s on %s (%s); "
                        "it will be resolved when the kernel first sends to it", nh, name, e)
    return idx


class QuietInterface:
    """Silence the kernel's own stack on a data interface (restored on :meth:`restore`):
    no ARP answers, no IPv6, no IPv4 forwarding of what arrives on it."""

    def __init__(self, ipr: IPRoute, name: str) -> None:
        self.ipr, self.name = ipr, name
        self.idx = ipr.link_lookup(ifname=name)[0]
        link = ipr.get_links(self.idx)[0]
        self._noarp = bool(link["flags"] & 0x80)        # IFF_NOARP
        self._sysctls = {}
        for path, value in ((f"net/ipv6/conf/{name}/disable_ipv6", "1"),
                            (f"net/ipv4/conf/{name}/forwarding", "0")):
            old = _sysctl(path, value)
            if old is not None:
                self._sysctls[path] = old
        ipr.link("set", index=self.idx, arp="off", state="up")

    def restore(self) -> None:
        try:
            if not self._noarp:
                self.ipr.link("set", index=self.idx, arp="on")
            for path, old in self._sysctls.items():
                _sysctl(path, old)
        except Exception as e:          # the interface may be gone already
            log.debug("could not restore %s: %s", self.name, e)
