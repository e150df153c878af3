"""Next-hop MACs from the kernel's neighbour table, over netlink (pyroute2).

Each next hop is an IP address on a TAP (see :mod:`lwaftr.io.tap`); the
kernel resolves it (ARP or NDP through the TAP and the data interface) and
keeps it fresh (a *managed* neighbour entry).  :class:`NextHops` reads the
table every ``refresh`` seconds and whenever a neighbour event arrives on its
netlink socket; a next hop whose entry has no usable link-layer address is
``None``, and the data plane then drops and counts rather than guess.
"""
from __future__ import annotations

import ipaddress
import logging
import select

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_NEIGH

log = logging.getLogger("lwaftr.io.neighbors")
NTF_EXT_MANAGED = 0x01

# <linux/neighbour.h> states whose link-layer address may be used.
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x40, 0x80
USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT


def _mac(text: str | None) -> bytes | None:
    return None if not text else bytes.fromhex(text.replace(":", ""))


class NextHops:
    """Watch ``(ifindex, ip)`` next hops; :meth:`macs` gives their MACs (or None)."""

    def __init__(self, ipr: IPRoute, hops: list[tuple[int, bytes]], refresh: float, *, manage: bool = False) -> None:
        """``manage``: re-create the managed neighbour entry of a hop when it is gone."""
        self.ipr = ipr
        self.manage = manage
        self.hops = [(idx, str(ipaddress.ip_address(ip))) for idx, ip in hops]
        self.refresh = refresh
        self.events = IPRoute()
        self.events.bind(groups=RTMGRP_NEIGH)
        self._macs: list[bytes | None] = [None] * len(hops)
        self._next = 0.0
        self.lookups = 0

    def fileno(self) -> int:
        return self.events.fileno()

    def macs(self) -> list[bytes | None]:
        return list(self._macs)

    def poll(self, now: float) -> bool:
        """Read pending events and, when due, the table; True if a MAC changed."""
        ev = False
        while select.select([self.events], [], [], 0)[0]:
            for m in self.events.get():
                if m.get("event") in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
                    ev = True
        if not ev and now < self._next:
            return False
        self._next = now + self.refresh
        return self._read()

    def _read(self) -> bool:
        self.lookups += 1
        new: list[bytes | None] = []
        for idx, ip in self.hops:
            mac = None
            try:
                entries = self.ipr.get_neighbours(ifindex=idx, dst=ip)
                for n in entries:
                    if n["state"] & USABLE:
                        mac = _mac(n.get_attr("NDA_LLADDR"))
                if not entries and self.manage:
                    # Flushed (ip neigh flush ...): ask the kernel to resolve it again.
                    self.ipr.neigh("replace", dst=ip, ifindex=idx, state=0, NDA_FLAGS_EXT=NTF_EXT_MANAGED)
            except Exception as e:          # interface gone: unknown until it is back
                log.debug("neighbour lookup of %s failed: %s", ip, e)
            new.append(mac)
        changed = new != self._macs
        if changed:
            for (idx, ip), old, mac in zip(self.hops, self._macs, new):
                if old != mac:
                    if mac is None:
                        log.warning("next hop %s: no link-layer address in the kernel's "
                                    "neighbour table; dropping its traffic until it resolves", ip)
                    else:
                        log.info("next hop %s is at %s", ip, mac.hex(":"))
            self._macs = new
        return changed

    def close(self) -> None:
        self.events.close()
