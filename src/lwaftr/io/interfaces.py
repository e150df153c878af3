"""What a command needs of the interfaces and privileges it is given, checked before it touches anything.

``lwaftr run`` (directly, under the supervisor, in the container entry point),
``lwaftr monitor --tap`` (in the instance, where the TAP is made) and
``lwaftr demo`` ask here.  Each problem raises :class:`InterfaceError`
(``str()``: ``interface NAME (ROLE): reason``) or :class:`PrivilegeError`
naming the missing capabilities.
"""
from __future__ import annotations

import os
from pathlib import Path

SYS_NET = Path("/sys/class/net")
IFF_UP = 0x1
IFF_TAP = 0x2                       # <linux/if_tun.h>, in /sys/class/net/NAME/tun_flags
ARPHRD_ETHER = 1
#: Link types (``/sys/class/net/NAME/type``, <linux/if_arp.h>) by name, for messages.
ARPHRD_NAMES = {768: "IPIP tunnel", 769: "IPv6-in-IPv6 tunnel", 772: "loopback", 776: "SIT tunnel",
                778: "GRE tunnel", 823: "IPv6 GRE tunnel", 65534: "layer-3 (TUN, WireGuard or similar)",
                280: "CAN", 32: "InfiniBand", 512: "PPP"}
#: Capability bits (<linux/capability.h>).
CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}
#: What forwarding on an interface takes: AF_PACKET sockets, and link, TAP and sysctl changes.
RUN_CAPABILITIES = ("CAP_NET_ADMIN", "CAP_NET_RAW")


class InterfaceError(Exception):
    """An interface a user named cannot be used as asked; ``str()``: ``interface NAME (ROLE): reason``."""

    def __init__(self, name: str, reason: str, role: str | None = None) -> None:
        self.name, self.reason, self.role = name, reason, role
        super().__init__(f"interface {name}{f' ({role})' if role else ''}: {reason}")


class PrivilegeError(Exception):
    """This process lacks capabilities a command needs; ``missing``: their names."""

    def __init__(self, why: str, needed: tuple[str, ...], missing: list[str]) -> None:
        self.missing = missing
        caps = " and ".join([", ".join(needed[:-1]), needed[-1]] if len(needed) > 1 else needed)
        super().__init__(f"needs {caps} {why}; missing: {', '.join(missing)}")


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    """This process's effective capability bits (``CapEff``)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def require_capabilities(why: str, needed: tuple[str, ...] = RUN_CAPABILITIES) -> None:
    """PrivilegeError naming those of ``needed`` this process lacks (``why``: what they are for)."""
    eff = effective_capabilities()
    missing = [c for c in needed if not eff >> CAPABILITIES[c] & 1]
    if missing:
        raise PrivilegeError(why, needed, missing)


def present() -> list[str]:
    """The interfaces of this network namespace."""
    try:
        return sorted(os.listdir(SYS_NET))
    except OSError:
        return []


def _read(name: str, leaf: str) -> str | None:
    try:
        return (SYS_NET / name / leaf).read_text().strip()
    except OSError:
        return None


def valid_name(name: str) -> bool:
    """Linux's rule: 1-15 bytes, no ``/``, ``:`` or blanks, not ``.`` or ``..``."""
    return (0 < len(name.encode()) <= 15 and name not in (".", "..")
            and not any(c in name for c in "/:") and not any(c.isspace() for c in name))


def check_data_interface(name: str, role: str | None = None) -> None:
    """``name`` exists here, is Ethernet and is administratively up (InterfaceError otherwise)."""
    if not valid_name(name):
        raise InterfaceError(name, "is not a valid interface name (1-15 characters, no '/', ':' or blanks)", role)
    if not (SYS_NET / name).exists():
        raise InterfaceError(name, f"does not exist (present here: {', '.join(present()) or 'none'})", role)
    kind = _read(name, "type")
    if kind is not None and int(kind) != ARPHRD_ETHER:
        what = ARPHRD_NAMES.get(int(kind), f"link type {kind}")
        raise InterfaceError(name, f"is a {what} interface, not Ethernet", role)
    flags = _read(name, "flags")
    if flags is not None and not int(flags, 16) & IFF_UP:
        raise InterfaceError(name, f"is down (ip link set {name} up)", role)


def check_tap_name(name: str, role: str | None = None) -> None:
    """``name`` can be made a TAP: a valid name, and no interface of another kind holds it."""
    if not valid_name(name):
        raise InterfaceError(name, "is not a valid interface name (1-15 characters, no '/', ':' or blanks)", role)
    if (SYS_NET / name).exists():
        flags = _read(name, "tun_flags")
        if flags is None or not int(flags, 16) & IFF_TAP:
            raise InterfaceError(name, "exists and is not a TAP: name another (--tap NAME)", role)


def check_run(interfaces: list[tuple[str, str]]) -> None:
    """Everything ``lwaftr run`` needs before it starts: its capabilities, then
    each ``(name, role)`` an existing, up Ethernet interface."""
    require_capabilities("to forward on interfaces")
    for name, role in interfaces:
        check_data_interface(name, role)
