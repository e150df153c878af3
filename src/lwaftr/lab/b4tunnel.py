"""A minimal user-space lwB4 tunnel (lab only: this kernel has no ``ip6tnl``).

    python -m lwaftr.lab.b4tunnel --tun NAME --b4 B4_IPV6 --br BR_IPV6

Run inside a B4's namespace.  It creates a TUN device ``NAME`` (no packet
information header) for the IPv4 side, up with MTU 1500, and a raw IPv6
socket of protocol 4 (IPv4-in-IPv6) bound to the B4 address:

* IPv4 packets the kernel routes into the TUN (already NAPTed by nftables to
  the shared address and the B4's port set) are sent to the BR address; the
  kernel adds the IPv6 header (and fragments when the path needs it);
* IPv4-in-IPv6 packets from the BR (the kernel has reassembled fragments and
  removed the IPv6 header) are written to the TUN; any other source is
  counted and dropped.

Prints ``ready`` on stderr once both ends are open, and its packet counts on
SIGTERM/SIGINT, when it exits cleanly.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import os
import select
import signal
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
IFF_UP = 0x1
IPPROTO_IPIP = 4
BATCH = 64           # packets read from one side before looking at the other
MAX_PACKET = 65535


def open_tun(name: str, mtu: int = 1500) -> int:
    """A non-blocking TUN file descriptor for ``name``, the interface up with ``mtu``."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCSIFMTU, struct.pack("16si", name.encode(), mtu))
            flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", name.encode(), 0)))[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", name.encode(), flags | IFF_UP))
    except OSError:
        os.close(fd)
        raise
    return fd


def open_tunnel_socket(b4: str) -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPIP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((b4, 0))
    return s


class Tunnel:
    def __init__(self, tun: str, b4: str, br: str, mtu: int = 1500) -> None:
        self.br = ipaddress.IPv6Address(br)
        self.br_text = str(self.br)
        self.fd = open_tun(tun, mtu)
        self.sock = open_tunnel_socket(b4)
        self.to_br = self.from_br = self.wrong_source = self.send_errors = 0

    def tun_to_br(self) -> None:
        """Up to BATCH IPv4 packets from the TUN, each sent to the BR."""
        for _ in range(BATCH):
            try:
                pkt = os.read(self.fd, MAX_PACKET)
            except BlockingIOError:
                return
            try:
                self.sock.sendto(pkt, (self.br_text, 0))      # blocking: the socket buffer paces us
                self.to_br += 1
            except OSError:     # e.g. EMSGSIZE, unreachable: the packet is lost, as on a wire
                self.send_errors += 1

    def br_to_tun(self) -> None:
        """Up to BATCH tunnelled packets from the socket; the BR's go to the TUN."""
        for _ in range(BATCH):
            try:
                pkt, addr = self.sock.recvfrom(MAX_PACKET, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if ipaddress.IPv6Address(addr[0].split("%")[0]) != self.br:
                self.wrong_source += 1
                continue
            try:
                os.write(self.fd, pkt)
                self.from_br += 1
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EAGAIN, errno.ENOBUFS):
                    raise

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self.sock.fileno(), select.POLLIN)
        tun_fd, sock_fd = self.fd, self.sock.fileno()
        while True:
            for fd, _ in poller.poll():
                if fd == tun_fd:
                    self.tun_to_br()
                elif fd == sock_fd:
                    self.br_to_tun()

    def close(self) -> None:
        self.sock.close()
        os.close(self.fd)


class _Stop(Exception):
    pass


def _stop(*_) -> None:
    raise _Stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lwaftr.lab.b4tunnel", description=__doc__.split("\n\n")[0])
    p.add_argument("--tun", required=True, help="TUN device to create (IPv4 side)")
    p.add_argument("--b4", required=True, help="this B4's IPv6 address (bound)")
    p.add_argument("--br", required=True, help="the lwAFTR's BR IPv6 address")
    p.add_argument("--mtu", type=int, default=1500, help="TUN MTU (default 1500)")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        t = Tunnel(a.tun, a.b4, a.br, a.mtu)
    except _Stop:
        return 0
    except OSError as e:
        print(f"b4tunnel: {e}", file=sys.stderr)
        return 1
    print(f"ready: {a.tun} <-> {a.b4} -> {a.br}", file=sys.stderr, flush=True)
    try:
        t.run()
    except _Stop:
        pass
    finally:
        t.close()
        print(f"to-br {t.to_br} from-br {t.from_br} wrong-source {t.wrong_source} send-errors {t.send_errors}",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
