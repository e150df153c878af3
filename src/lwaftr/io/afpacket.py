"""Linux AF_PACKET rings, driven in batches from compiled code.

Receive: a ``TPACKET_V3`` ring (blocks of frames the kernel fills); compiled
code walks the blocks, copies frames into packet-pool slots and hands blocks
back.  Transmit: a ``PACKET_TX_RING`` (``TPACKET_V2``, ``PACKET_QDISC_BYPASS``);
compiled code copies slots into free ring frames, marks them for sending,
and one ``send()`` per batch kicks the kernel.  No ``recv``/``send`` per frame.

Layouts are those of ``<linux/if_packet.h>``; offsets are named below.
"""
from __future__ import annotations

import fcntl
import mmap
import socket
import struct

import numba
import numpy as np

from lwaftr.dataplane.pool import HEADROOM, PacketPool, in_address_order

# <linux/if_packet.h>
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_QDISC_BYPASS = 20
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_FANOUT_HASH = 0
TPACKET_V2 = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_WRONG_FORMAT = 4
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_AVAILABLE = 0

# struct tpacket_block_desc { u32 version; u32 offset_to_priv; struct tpacket_hdr_v1 h1; }
O_BLOCK_STATUS = 8
O_BLOCK_NUM_PKTS = 12
O_BLOCK_FIRST_PKT = 16
# struct tpacket3_hdr
O_T3_NEXT = 0
O_T3_SNAPLEN = 12
O_T3_STATUS = 20
O_T3_MAC = 24
# struct tpacket2_hdr (32 bytes); frame data follows at TPACKET2_HDRLEN - sizeof(sockaddr_ll)
O_T2_STATUS = 0
O_T2_LEN = 4
O_T2_SNAPLEN = 8
T2_DATA = 32
ETH_HLEN = 14
VLAN_HLEN = 4


@numba.njit(cache=True, nogil=True)
def _u32(a, o):
    return np.int64(a[o]) | (np.int64(a[o + 1]) << 8) | (np.int64(a[o + 2]) << 16) | (np.int64(a[o + 3]) << 24)


@numba.njit(cache=True, nogil=True)
def _w32(a, o, v):
    a[o] = v & 0xFF
    a[o + 1] = (v >> 8) & 0xFF
    a[o + 2] = (v >> 16) & 0xFF
    a[o + 3] = (v >> 24) & 0xFF


@numba.njit(cache=True, nogil=True)
def rx_burst(ring, block_size, block_nr, state, buf, off, length, free_list, n_free, bits, max_frame, out,
             flags):
    """Move up to ``len(out)`` received frames into fresh pool slots, taken in
    address order (``bits``: the pool's ``order_bits``, :func:`in_address_order`).

    ``state`` = [current block, packets left in it, offset of the next packet].
    Frames longer than ``max_frame`` are dropped (counted in state[3]).
    ``flags[i]`` gets the frame's tp_status (e.g. TP_STATUS_CSUMNOTREADY).
    Returns the number of slots filled.
    """
    n = 0
    cap = out.shape[0]
    ordered = False
    while n < cap:
        b = state[0] * block_size
        if state[1] == 0:
            if (_u32(ring, b + O_BLOCK_STATUS) & TP_STATUS_USER) == 0:
                break                                   # nothing more from the kernel yet
            state[1] = _u32(ring, b + O_BLOCK_NUM_PKTS)
            state[2] = _u32(ring, b + O_BLOCK_FIRST_PKT)
            if state[1] == 0:
                _w32(ring, b + O_BLOCK_STATUS, TP_STATUS_KERNEL)
                state[0] = (state[0] + 1) % block_nr
                continue
        if n_free[0] == 0:
            break
        p = b + state[2]
        snap = _u32(ring, p + O_T3_SNAPLEN)
        mac = np.int64(ring[p + O_T3_MAC]) | (np.int64(ring[p + O_T3_MAC + 1]) << 8)
        status = _u32(ring, p + O_T3_STATUS)
        if snap <= max_frame:
            if not ordered:
                in_address_order(free_list, n_free, cap - n, bits, 2 * (cap - n))
                ordered = True
            n_free[0] -= 1
            s = free_list[n_free[0]]
            off[s] = HEADROOM
            length[s] = snap
            d = buf[s]
            for k in range(snap):
                d[HEADROOM + k] = ring[p + mac + k]
            out[n] = s
            flags[n] = status
            n += 1
        else:
            state[3] += 1
        state[2] += _u32(ring, p + O_T3_NEXT)
        state[1] -= 1
        if state[1] == 0:                               # block done: give it back
            _w32(ring, b + O_BLOCK_STATUS, TP_STATUS_KERNEL)
            state[0] = (state[0] + 1) % block_nr
    return n


@numba.njit(cache=True, nogil=True)
def tx_burst(ring, frame_size, frame_nr, max_len, state, buf, off, length, slots):
    """Copy pool slots into free TX ring frames and mark them for sending.

    ``state`` = [next ring frame, frames refused because the ring was full,
    frames refused for being longer than ``max_len`` (``max_len`` + 4 with
    an 802.1Q tag)].  Returns the number queued.
    """
    n = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        m = np.int64(length[s])
        o = off[s]
        tagged = m >= ETH_HLEN and buf[s, o + 12] == 0x81 and buf[s, o + 13] == 0x00
        if m > max_len + (VLAN_HLEN if tagged else 0) or m > frame_size - T2_DATA:
            state[2] += 1
            continue
        f = state[0] * frame_size
        if _u32(ring, f + O_T2_STATUS) != TP_STATUS_AVAILABLE:
            state[1] += 1                               # ring full: the kernel is behind
            continue
        src = buf[s]
        for k in range(m):
            ring[f + T2_DATA + k] = src[o + k]
        _w32(ring, f + O_T2_LEN, m)
        _w32(ring, f + O_T2_SNAPLEN, m)
        _w32(ring, f + O_T2_STATUS, TP_STATUS_SEND_REQUEST)
        state[0] = (state[0] + 1) % frame_nr
        n += 1
    return n


def _open(protocol: int = ETH_P_ALL) -> socket.socket:
    return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))


class RxRing:
    """A TPACKET_V3 receive ring on one interface.

    The kernel hands a block over when it is full or ``timeout_ms`` after its
    first frame, so below a block's worth per timeout the ring holds
    ``block_nr`` timeouts of traffic, whatever its size: many small blocks
    (128 x 128 KiB: 128 ms, and ~26k 550-byte frames when full) ride out a
    stall of the reader that 16 x 1 MiB (16 ms) does not (benchmarks/live.py).

    ``fanout``: the id of a ``PACKET_FANOUT_HASH`` group this ring joins, so
    that several rings (one per worker) on one interface share its frames
    by flow: the kernel picks the member from the frame's flow hash, so the
    frames of one flow always reach the same ring, in order.  Rollover is
    off: a full ring drops rather than reorder a flow onto another worker.
    When a member leaves (its worker died), its flows go to the others.
    """

    def __init__(self, ifname: str, *, block_size: int = 1 << 17, block_nr: int = 128,
                 frame_size: int = 2048, timeout_ms: int = 1, fanout: int | None = None) -> None:
        self.sock = _open()
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass
        # struct tpacket_req3
        req = struct.pack("IIIIIII", block_size, block_nr, frame_size, block_size // frame_size * block_nr,
                          timeout_ms, 0, 0)
        self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.size = block_size * block_nr
        self.map = mmap.mmap(self.sock.fileno(), self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.ring = np.frombuffer(self.map, np.uint8)
        self.block_size, self.block_nr = block_size, block_nr
        self.state = np.zeros(4, np.int64)
        self._stats = [0, 0, 0]
        self.sock.bind((ifname, ETH_P_ALL))
        if fanout is not None:
            self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (fanout & 0xFFFF) | PACKET_FANOUT_HASH << 16)

    def fileno(self) -> int:
        return self.sock.fileno()

    def stats(self) -> dict[str, int]:
        """PACKET_STATISTICS since the ring was opened: ``packets`` the kernel
        handed to this socket (taken or not), ``drops`` of those lost because
        the ring was full, ``freeze_q`` times the queue froze.  The kernel
        zeroes its figures on every read; they are accumulated here."""
        packets, drops, freeze = struct.unpack("III", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        self._stats[0] += packets                    # the kernel's tp_packets already includes tp_drops
        self._stats[1] += drops
        self._stats[2] += freeze
        return {"packets": self._stats[0], "drops": self._stats[1], "freeze_q": self._stats[2]}

    def receive(self, pool: PacketPool, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``max_frames`` frames as pool slots, and their ring status flags."""
        out = np.empty(max_frames, np.int32)
        flags = np.empty(max_frames, np.int64)
        n = rx_burst(self.ring, self.block_size, self.block_nr, self.state, pool.buf, pool.off, pool.length,
                     pool.free_list, pool.n_free, pool.order_bits, pool.max_frame, out, flags)
        return out[:n], flags[:n]

    def close(self) -> None:
        del self.ring
        self.map.close()
        self.sock.close()

    @property
    def too_big(self) -> int:
        """Frames dropped so far for not fitting a packet-pool slot."""
        return int(self.state[3])


SIOCGIFMTU = 0x8921


def link_mtu(ifname: str, sock: socket.socket | None = None) -> int:
    """``ifname``'s MTU, asked of the kernel (``SIOCGIFMTU``) in the network
    namespace of ``sock`` (else of this process): sysfs shows the namespace it
    was mounted in, not necessarily ours (a process that ``setns()``-ed)."""
    s = sock if sock is not None else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("16si12x", ifname.encode(), 0))
    finally:
        if sock is None:
            s.close()
    return struct.unpack_from("i", req, 16)[0]


def fanout_group(ifname: str) -> int:
    """The fanout group id the workers of ``ifname`` agree on without talking:
    its ifindex (a group is per network namespace, and one instance serves an
    interface)."""
    return socket.if_nametoindex(ifname) & 0xFFFF


class TxRing:
    """A TPACKET_V2 transmit ring with PACKET_QDISC_BYPASS on one interface.

    The kernel refuses a ring frame longer than the interface's MTU plus an
    Ethernet header (and a VLAN tag if it has one) with EMSGSIZE, marks it
    ``TP_STATUS_WRONG_FORMAT``
    and, by default, stops there: that frame never goes back to available and
    the kernel sends nothing after it, ever (one oversized frame wedged the
    ring for good).  So frames longer than that are refused here and counted
    (``state[2]``), and ``PACKET_LOSS`` makes the kernel skip, rather than
    stop at, any frame it still finds malformed (the MTU lowered meanwhile).

    A kick the kernel refuses (EAGAIN, ENOBUFS) leaves frames in the ring:
    :attr:`kick_pending` is then set and :meth:`flush` (called every loop
    iteration, traffic or not) kicks again; ``kicks_deferred`` counts them.
    """

    def __init__(self, ifname: str, *, frame_size: int = 2048, frame_nr: int = 4096) -> None:
        # Protocol 0: a transmit-only socket.  Bound to ETH_P_ALL it would also be
        # handed every frame in and out of the interface, never read (kept until
        # its receive buffer is full, then dropped one by one).
        self.sock = _open(0)
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.sock.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
        # struct tpacket_req
        block_size = frame_size * 16
        req = struct.pack("IIII", block_size, frame_nr // 16, frame_size, frame_nr)
        self.sock.setsockopt(SOL_PACKET, PACKET_TX_RING, req)
        self.size = block_size * (frame_nr // 16)
        self.map = mmap.mmap(self.sock.fileno(), self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.ring = np.frombuffer(self.map, np.uint8)
        self.frame_size, self.frame_nr = frame_size, frame_nr
        self.max_len = link_mtu(ifname, self.sock) + ETH_HLEN
        self.state = np.zeros(3, np.int64)
        self.kick_pending = False
        self.kicks_deferred = 0
        self.sock.bind((ifname, 0))

    def send(self, pool: PacketPool, slots: np.ndarray) -> int:
        """Queue the slots' frames and kick the kernel once; returns how many were queued."""
        n = tx_burst(self.ring, self.frame_size, self.frame_nr, self.max_len, self.state, pool.buf, pool.off,
                     pool.length, np.asarray(slots, np.int32))
        if n or self.kick_pending:
            self._kick()
        return n

    def flush(self) -> None:
        """Kick again if the last kick was refused (frames wait in the ring)."""
        if self.kick_pending:
            self._kick()

    def _kick(self) -> None:
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
            self.kick_pending = False
        except OSError:                                 # EAGAIN, ENOBUFS: frames stay queued
            self.kick_pending = True
            self.kicks_deferred += 1

    @property
    def ring_full(self) -> int:
        """Frames refused so far because the ring was full."""
        return int(self.state[1])

    @property
    def too_big(self) -> int:
        """Frames refused so far for being longer than the interface sends."""
        return int(self.state[2])

    def close(self) -> None:
        del self.ring
        self.map.close()
        self.sock.close()
