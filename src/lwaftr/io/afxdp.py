"""AF_XDP port (XDP socket), driven in batches from compiled code.

An XDP socket shares one memory area, the UMEM (frames of ``frame_size``
bytes), with the kernel through four single-producer/single-consumer rings
mapped from the socket:

====== ============ ===================================== ===================
ring   producer     entries                               pool as UMEM
====== ============ ===================================== ===================
fill   user         u64 UMEM address of a free frame      free pool slots
rx     kernel       ``struct xdp_desc`` {u64 addr; u32    received slots
                    len; u32 options} of a received frame
tx     user         ``struct xdp_desc`` of a frame to     slots to send
                    send
comp   kernel       u64 address of a frame the kernel     back to the pool
                    has finished sending
====== ============ ===================================== ===================

Two ways to use it (:class:`XdpPort`):

- *The UMEM is the packet pool* (``pool=``, what ``lwaftr run --io xdp``
  does): the kernel writes each frame into a pool slot, 256 bytes in
  (``XDP_PACKET_HEADROOM``, room for the 40-byte IPv6 header encapsulation
  prepends), the engine processes it there and the same slot is posted for
  transmit; completed slots return to the pool, which keeps the fill ring
  stocked.  No user-space copy.  Each interface's socket registers the pool's
  memory as a UMEM of its own, so a slot received on one interface leaves on
  another.  Whether the *kernel* copies (``XDP_COPY``: veth, and any driver
  without AF_XDP zero-copy) or the NIC DMAs straight into the slot
  (``XDP_ZEROCOPY``) is the driver's choice; copy mode is logged.
- *An own UMEM* (tests, a pool with slots larger than 4096 bytes): frames
  are copied between UMEM frames and pool slots; half the frames circulate
  fill -> rx -> fill, the other half free -> tx -> comp -> free, so no
  frame is ever held outside a call.

Each ring is mapped as ``{u32 producer; pad; u32 consumer; pad; u32 flags;
desc[size]}`` (offsets from ``getsockopt(XDP_MMAP_OFFSETS)``,
``<linux/if_xdp.h>``).  Socket set-up, the mmaps and loading the default XDP
program (redirect queue N to the socket) are left to libxdp
(``xsk_umem__create``, ``xsk_socket__create``); its ring accessors are
``static inline`` in ``<xdp/xsk.h>``, so this module reads the exported
``struct xsk_ring_prod``/``xsk_ring_cons`` {u32 cached_prod, cached_cons,
mask, size; u32 *producer, *consumer; void *ring; u32 *flags} that libxdp
fills in and does the ring operations itself, in numba, on numpy views of
those structs and of the mapped rings, with the same semantics as libxdp's
inline functions (``cached_cons`` of a producer ring is ``size`` ahead of the
real consumer).  Ordering: descriptor reads happen after the producer index
is read, and the consumer/producer index store is the last store, each
separated by an LLVM ``fence acq_rel`` (a compiler barrier on x86-64, where
loads and stores are not reordered with older stores/loads of the same kind).

Differences from the AF_PACKET rings:

- No ``TP_STATUS_CSUMNOTREADY`` equivalent: XDP gets the frame as the peer's
  skb holds it, so a datagram from a local stack behind a veth (checksum
  offload on) arrives with its TCP/UDP checksum unfinished and nothing says
  so (checked on this kernel).  Receive flags are therefore all 0; turn
  offload off on such senders (``ethtool -K IF tx off``).
- The XDP program takes every frame of its queue away from the kernel stack
  (ARP/NDP included); frames on other RX queues still go to the stack.
- Copy mode sends at most 32 frames per ``sendto()`` unless
  ``XDP_MAX_TX_SKB_BUDGET`` (Linux >= 6.17) raises that, which is done here;
  otherwise one kick per batch becomes several.
- libxdp detaches the XDP program when the last socket using it is deleted
  (:meth:`XdpPort.close`).  After a SIGKILL it stays attached, harmless (it
  passes frames to the stack when no socket is bound) and reused by the next
  port; ``ip link set dev IF xdp off`` removes it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import mmap
import os
import socket
import struct
import subprocess
import time

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from lwaftr.dataplane.pool import HEADROOM, PacketPool, in_address_order

log = logging.getLogger("lwaftr.io")

# <linux/if_xdp.h>, <linux/if_link.h>
AF_XDP = 44
SOL_XDP = 283
XDP_STATISTICS = 7
XDP_OPTIONS = 8
XDP_OPTIONS_ZEROCOPY = 1
XDP_MAX_TX_SKB_BUDGET = 9                               # Linux >= 6.17: copy-mode frames per sendto()
XDP_USE_NEED_WAKEUP = 1 << 3
XDP_RING_NEED_WAKEUP = 1
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_PACKET_HEADROOM = 256
BPFFS = "/sys/fs/bpf"

# Rings, in the order of the ring-struct array and of the index table.
FILL, COMP, RX, TX = 0, 1, 2, 3
# Columns of the per-ring index table (u32 units into that ring's view).
I_PROD, I_CONS, I_FLAGS, I_DESC = 0, 1, 2, 3
# Fields of struct xsk_ring_{prod,cons} as u32: cached_prod, cached_cons, mask, size.
C_PROD, C_CONS, MASK, SIZE = 0, 1, 2, 3
M32 = 0xFFFFFFFF
# Counters of frames refused in user space.
S_RX_TOO_BIG, S_TX_FULL, S_TX_TOO_BIG = 0, 1, 2


class _Ring(ctypes.Structure):
    """``struct xsk_ring_prod`` / ``struct xsk_ring_cons`` (<xdp/xsk.h>)."""
    _fields_ = [("cached_prod", ctypes.c_uint32), ("cached_cons", ctypes.c_uint32),
                ("mask", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("producer", ctypes.c_void_p), ("consumer", ctypes.c_void_p),
                ("ring", ctypes.c_void_p), ("flags", ctypes.c_void_p)]


class _UmemConfig(ctypes.Structure):
    _fields_ = [("fill_size", ctypes.c_uint32), ("comp_size", ctypes.c_uint32),
                ("frame_size", ctypes.c_uint32), ("frame_headroom", ctypes.c_uint32),
                ("flags", ctypes.c_uint32)]


class _SocketConfig(ctypes.Structure):
    _fields_ = [("rx_size", ctypes.c_uint32), ("tx_size", ctypes.c_uint32),
                ("libxdp_flags", ctypes.c_uint32), ("xdp_flags", ctypes.c_uint32),
                ("bind_flags", ctypes.c_uint16)]


# ---------------------------------------------------------------- compiled ring operations

@intrinsic
def _barrier(typingctx):
    """``fence acq_rel``: no memory access moves across it (no instruction on x86-64)."""
    def codegen(context, builder, signature, args):
        builder.fence("acq_rel")
        return context.get_dummy_value()
    return types.void(), codegen


@numba.njit(cache=True, nogil=True)
def _cons_avail(hdr, m, ix, want):
    """Entries ready on a consumer ring (``xsk_cons_nb_avail``), at most ``want``."""
    n = (np.int64(hdr[C_PROD]) - np.int64(hdr[C_CONS])) & M32
    if n == 0:
        hdr[C_PROD] = m[ix[I_PROD]]
        _barrier()                                      # acquire: entries read after the index
        n = (np.int64(hdr[C_PROD]) - np.int64(hdr[C_CONS])) & M32
    return min(n, want)


@numba.njit(cache=True, nogil=True)
def _prod_free(hdr, m, ix, want):
    """Free entries on a producer ring (``xsk_prod_nb_free``), at most ``want``."""
    n = (np.int64(hdr[C_CONS]) - np.int64(hdr[C_PROD])) & M32
    if n < want:
        hdr[C_CONS] = (np.int64(m[ix[I_CONS]]) + np.int64(hdr[SIZE])) & M32
        _barrier()
        n = (np.int64(hdr[C_CONS]) - np.int64(hdr[C_PROD])) & M32
    return min(n, want)


@numba.njit(cache=True, nogil=True)
def _cons_release(hdr, m, ix, n):
    """Hand ``n`` consumed entries back (``xsk_ring_cons__release``); last store."""
    c = (np.int64(hdr[C_CONS]) + n) & M32
    hdr[C_CONS] = c
    _barrier()                                          # release: entries read before the index moves
    m[ix[I_CONS]] = c


@numba.njit(cache=True, nogil=True)
def _prod_submit(hdr, m, ix, n):
    """Publish ``n`` written entries (``xsk_ring_prod__submit``); last store."""
    p = (np.int64(hdr[C_PROD]) + n) & M32
    hdr[C_PROD] = p
    _barrier()                                          # release: entries written before the index moves
    m[ix[I_PROD]] = p


@numba.njit(cache=True, nogil=True)
def _fill_init(hdr, fill_m, ix, frames, n):
    """Post ``frames[:n]`` on the fill ring."""
    k = _prod_free(hdr[FILL], fill_m, ix[FILL], n)
    p = np.int64(hdr[FILL, C_PROD])
    mask = np.int64(hdr[FILL, MASK])
    d = ix[FILL, I_DESC]
    for i in range(k):
        e = d + 2 * ((p + i) & mask)
        fill_m[e] = frames[i] & M32
        fill_m[e + 1] = frames[i] >> 32
    _prod_submit(hdr[FILL], fill_m, ix[FILL], k)
    return k


@numba.njit(cache=True, nogil=True)
def _rx_burst(umem, hdr, ix, rx_m, fill_m, chunk_mask, buf, off, length, free_list, n_free, bits, max_frame,
              out, stats):
    """Copy up to ``len(out)`` received frames into fresh pool slots, taken in address
    order (:func:`in_address_order`); their UMEM frames go straight back on the
    fill ring.  Returns the number of slots filled."""
    want = min(out.shape[0], n_free[0])
    n = _cons_avail(hdr[RX], rx_m, ix[RX], want)
    n = _prod_free(hdr[FILL], fill_m, ix[FILL], n)      # never short in practice: see XdpPort
    in_address_order(free_list, n_free, n, bits, 2 * n)
    c = np.int64(hdr[RX, C_CONS])
    rmask = np.int64(hdr[RX, MASK])
    rd = ix[RX, I_DESC]
    p = np.int64(hdr[FILL, C_PROD])
    fmask = np.int64(hdr[FILL, MASK])
    fd = ix[FILL, I_DESC]
    k = 0
    for i in range(n):
        e = rd + 4 * ((c + i) & rmask)
        addr = np.int64(rx_m[e]) | (np.int64(rx_m[e + 1]) << 32)
        m = np.int64(rx_m[e + 2])
        if m <= max_frame:
            n_free[0] -= 1
            s = free_list[n_free[0]]
            off[s] = HEADROOM
            length[s] = m
            d = buf[s]
            for j in range(m):
                d[HEADROOM + j] = umem[addr + j]
            out[k] = s
            k += 1
        else:
            stats[S_RX_TOO_BIG] += 1
        base = addr & chunk_mask
        f = fd + 2 * ((p + i) & fmask)
        fill_m[f] = base & M32
        fill_m[f + 1] = base >> 32
    if n:
        _cons_release(hdr[RX], rx_m, ix[RX], n)
        _prod_submit(hdr[FILL], fill_m, ix[FILL], n)
    return k


@numba.njit(cache=True, nogil=True)
def _reclaim(hdr, ix, comp_m, chunk_mask, frames, n_frames):
    """Move completed TX frames back onto the free stack ``frames[:n_frames[0]]``."""
    n = _cons_avail(hdr[COMP], comp_m, ix[COMP], frames.shape[0] - n_frames[0])
    c = np.int64(hdr[COMP, C_CONS])
    mask = np.int64(hdr[COMP, MASK])
    d = ix[COMP, I_DESC]
    for i in range(n):
        e = d + 2 * ((c + i) & mask)
        frames[n_frames[0]] = (np.int64(comp_m[e]) | (np.int64(comp_m[e + 1]) << 32)) & chunk_mask
        n_frames[0] += 1
    if n:
        _cons_release(hdr[COMP], comp_m, ix[COMP], n)
    return n


@numba.njit(cache=True, nogil=True)
def _tx_burst(umem, hdr, ix, tx_m, comp_m, chunk_mask, frame_size, frames, n_frames, buf, off, length, slots,
              stats):
    """Reclaim completions, then copy slots into free UMEM frames and post them
    on the TX ring.  Returns the number queued."""
    _reclaim(hdr, ix, comp_m, chunk_mask, frames, n_frames)
    room = _prod_free(hdr[TX], tx_m, ix[TX], min(slots.shape[0], n_frames[0]))
    p = np.int64(hdr[TX, C_PROD])
    mask = np.int64(hdr[TX, MASK])
    d = ix[TX, I_DESC]
    k = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        m = np.int64(length[s])
        if m > frame_size:
            stats[S_TX_TOO_BIG] += 1
            continue
        if k == room:
            stats[S_TX_FULL] += 1
            continue
        n_frames[0] -= 1
        a = frames[n_frames[0]]
        src = buf[s]
        o = off[s]
        for j in range(m):
            umem[a + j] = src[o + j]
        e = d + 4 * ((p + k) & mask)
        tx_m[e] = a & M32
        tx_m[e + 1] = a >> 32
        tx_m[e + 2] = m
        tx_m[e + 3] = 0
        k += 1
    if k:
        _prod_submit(hdr[TX], tx_m, ix[TX], k)
    return k


# ---------------------------------------------------------------- the UMEM as the packet pool

@numba.njit(cache=True, nogil=True)
def _pool_rx(hdr, ix, rx_m, frame_size, off, length, out):
    """Hand up to ``len(out)`` received frames over as the pool slots they are in
    (slot = UMEM frame; the frame starts after the kernel's headroom, which
    ``off`` records).  Returns the number received.  Nothing is copied."""
    n = _cons_avail(hdr[RX], rx_m, ix[RX], out.shape[0])
    c = np.int64(hdr[RX, C_CONS])
    mask = np.int64(hdr[RX, MASK])
    d = ix[RX, I_DESC]
    for i in range(n):
        e = d + 4 * ((c + i) & mask)
        addr = np.int64(rx_m[e]) | (np.int64(rx_m[e + 1]) << 32)
        s = addr // frame_size
        off[s] = addr - s * frame_size
        length[s] = rx_m[e + 2]
        out[i] = s
    if n:
        _cons_release(hdr[RX], rx_m, ix[RX], n)
    return n


@numba.njit(cache=True, nogil=True)
def _pool_fill(hdr, fill_m, ix, frame_size, free_list, n_free, bits, reserve):
    """Post free pool slots on the fill ring, as many as it takes, in address order
    (:func:`in_address_order`), keeping ``reserve`` slots in the pool for the
    engine.  Returns the number posted."""
    k = _prod_free(hdr[FILL], fill_m, ix[FILL], max(np.int64(0), n_free[0] - reserve))
    in_address_order(free_list, n_free, k, bits, 2 * k)
    p = np.int64(hdr[FILL, C_PROD])
    mask = np.int64(hdr[FILL, MASK])
    d = ix[FILL, I_DESC]
    for i in range(k):
        n_free[0] -= 1
        a = np.int64(free_list[n_free[0]]) * frame_size
        e = d + 2 * ((p + i) & mask)
        fill_m[e] = a & M32
        fill_m[e + 1] = a >> 32
    if k:
        _prod_submit(hdr[FILL], fill_m, ix[FILL], k)
    return k


@numba.njit(cache=True, nogil=True)
def _pool_reclaim(hdr, ix, comp_m, frame_size, free_list, n_free):
    """Slots the kernel has finished sending go back to the pool."""
    n = _cons_avail(hdr[COMP], comp_m, ix[COMP], np.int64(M32))
    c = np.int64(hdr[COMP, C_CONS])
    mask = np.int64(hdr[COMP, MASK])
    d = ix[COMP, I_DESC]
    for i in range(n):
        e = d + 2 * ((c + i) & mask)
        free_list[n_free[0]] = (np.int64(comp_m[e]) | (np.int64(comp_m[e + 1]) << 32)) // frame_size
        n_free[0] += 1
    if n:
        _cons_release(hdr[COMP], comp_m, ix[COMP], n)
    return n


@numba.njit(cache=True, nogil=True)
def _pool_tx(hdr, ix, tx_m, comp_m, frame_size, free_list, n_free, off, length, slots, max_len, stats):
    """Post the slots themselves on the TX ring (the kernel sends each from where
    it lies, then returns it through the completion ring).  A slot refused (ring
    full, frame longer than ``max_len``) goes back to the pool at once: every
    slot given here is the port's.  Returns the number queued."""
    _pool_reclaim(hdr, ix, comp_m, frame_size, free_list, n_free)
    room = _prod_free(hdr[TX], tx_m, ix[TX], slots.shape[0])
    p = np.int64(hdr[TX, C_PROD])
    mask = np.int64(hdr[TX, MASK])
    d = ix[TX, I_DESC]
    k = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        m = np.int64(length[s])
        if m > max_len or off[s] + m > frame_size:
            stats[S_TX_TOO_BIG] += 1
        elif k == room:
            stats[S_TX_FULL] += 1
        else:
            a = np.int64(s) * frame_size + off[s]
            e = d + 4 * ((p + k) & mask)
            tx_m[e] = a & M32
            tx_m[e + 1] = a >> 32
            tx_m[e + 2] = m
            tx_m[e + 3] = 0
            k += 1
            continue
        free_list[n_free[0]] = s
        n_free[0] += 1
    if k:
        _prod_submit(hdr[TX], tx_m, ix[TX], k)
    return k


# ---------------------------------------------------------------- libxdp and set-up

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


@_PRINT_FN
def _print(level: int, fmt: bytes, ap: int) -> int:
    """libxdp/libbpf messages (a va_list) to the debug log."""
    out = ctypes.create_string_buffer(512)
    _libc.vsnprintf(out, len(out), fmt, ap)
    log.debug("libxdp: %s", out.value.decode(errors="replace").rstrip())
    return 0


def _libxdp() -> ctypes.CDLL:
    """Load libxdp (Debian's libxdp1) once and route its messages to logging."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libxdp.so.1")
        P = ctypes.POINTER
        lib.xsk_umem__create.argtypes = [P(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_uint64, P(_Ring), P(_Ring),
                                         P(_UmemConfig)]
        lib.xsk_socket__create.argtypes = [P(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_uint32, ctypes.c_void_p,
                                           P(_Ring), P(_Ring), P(_SocketConfig)]
        lib.xsk_socket__fd.argtypes = [ctypes.c_void_p]
        lib.xsk_socket__delete.argtypes = [ctypes.c_void_p]
        lib.xsk_socket__delete.restype = None
        lib.xsk_umem__delete.argtypes = [ctypes.c_void_p]
        lib.libxdp_set_print.argtypes = [_PRINT_FN]
        lib.libxdp_set_print.restype = ctypes.c_void_p
        lib.libxdp_set_print(_print)
        try:
            bpf = ctypes.CDLL("libbpf.so.1")
            bpf.libbpf_set_print.argtypes = [_PRINT_FN]
            bpf.libbpf_set_print.restype = ctypes.c_void_p
            bpf.libbpf_set_print(_print)
        except OSError:
            pass
        _lib = lib
    return _lib


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")


def ensure_bpffs() -> None:
    """Mount bpffs on /sys/fs/bpf unless it is (libxdp keeps its program state there)."""
    with open("/proc/self/mounts") as f:
        if any(line.split()[1:3] == [BPFFS, "bpf"] for line in f):
            return
    os.makedirs(BPFFS, exist_ok=True)
    if _libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount -t bpf bpf {BPFFS}: {os.strerror(e)}")


def _view(ring: _Ring, entry_u32: int) -> tuple[np.ndarray, np.ndarray]:
    """A u32 view of one mapped ring (indices, flags, entries) and its index-table row."""
    ptrs = [ring.producer, ring.consumer, ring.flags, ring.ring]
    base = min(ptrs)
    n = (ring.ring - base) // 4 + ring.size * entry_u32
    m = np.ctypeslib.as_array((ctypes.c_uint32 * n).from_address(base))
    return m, np.array([(p - base) // 4 for p in ptrs], np.int64)


class XdpPort:
    """One AF_XDP socket on ``ifname`` queue ``queue``.

    ``mode``: ``"native"`` (driver XDP), ``"generic"`` (skb XDP) or ``"auto"``
    (native, else generic).  The kernel picks zero-copy where the driver
    supports it, copy mode otherwise (``self.zerocopy`` says which; copy
    mode is logged).

    Without ``pool`` the port has a UMEM of its own (``n_frames`` frames,
    rings of ``n_frames // 2``): frames are copied between it and the pool
    given to :meth:`receive` and :meth:`send`.  With ``pool`` the UMEM *is*
    that pool (its slots must be 2048 or 4096 bytes: UMEM chunks): a frame is
    received into a slot, processed where it lies (the kernel's 256 bytes of
    headroom take an encapsulating header), and sent from that slot; the
    port then owns every slot given to :meth:`send` (``owns_sent``) and
    returns it to the pool once sent or refused.  Several ports (interfaces)
    may register the same pool, each as a UMEM of its own over the same
    memory, so a frame received on one is sent from the same slot on another.
    The fill ring is kept full from the pool's free slots, short of
    ``reserve`` left for the engine.
    """

    def __init__(self, ifname: str, queue: int = 0, *, frame_size: int = 2048, n_frames: int = 4096,
                 mode: str = "auto", pool: PacketPool | None = None, ring_size: int = 2048,
                 reserve: int | None = None) -> None:
        if pool is not None:
            frame_size, n_frames = pool.slot_size, pool.n_slots
            if frame_size not in (2048, 4096):
                raise ValueError(f"a UMEM over the packet pool needs 2048- or 4096-byte slots, not {frame_size}")
            if ring_size & (ring_size - 1) or ring_size < 16:
                raise ValueError("ring_size must be a power of two >= 16")
        else:
            if frame_size & (frame_size - 1) or not 2048 <= frame_size <= 65536:
                raise ValueError("frame_size must be a power of two in 2048..65536")
            if n_frames & (n_frames - 1) or n_frames < 16:
                raise ValueError("n_frames must be a power of two >= 16")
            ring_size = n_frames // 2
        if mode not in ("auto", "native", "generic"):
            raise ValueError("mode must be auto, native or generic")
        socket.if_nametoindex(ifname)                   # fail early and plainly on a missing interface
        lib = _libxdp()
        ensure_bpffs()
        self.ifname, self.queue, self.pool = ifname, queue, pool
        self.owns_sent = pool is not None
        self.frame_size, self.n_frames, self.ring_size = frame_size, n_frames, ring_size
        self.reserve = (n_frames // 4 if reserve is None else reserve) if pool is not None else 0
        self.chunk_mask = ~(frame_size - 1)
        if pool is None:
            self._umem_map = mmap.mmap(-1, n_frames * frame_size)  # anonymous, shared: stays put across fork()
            self.umem = np.frombuffer(self._umem_map, np.uint8)
        else:
            self.umem = pool.buf.reshape(-1)            # page-aligned (see PacketPool)
        self._rings = (_Ring * 4)()
        self._umem_p = ctypes.c_void_p()
        self._xsk = ctypes.c_void_p()
        self._sock: socket.socket | None = None
        try:
            self._attach(lib, mode)
            fd = lib.xsk_socket__fd(self._xsk)
            _check(fd, "xsk_socket__fd")
            self._sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0, fileno=os.dup(fd))
            try:
                self._sock.setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET, ring_size)
            except OSError:
                pass                                    # older kernel: 32 per sendto(), _kick loops
        except BaseException:
            self.close()
            raise
        opts = self._sock.getsockopt(SOL_XDP, XDP_OPTIONS, 4)
        self.zerocopy = bool(struct.unpack("I", opts)[0] & XDP_OPTIONS_ZEROCOPY)
        if not self.zerocopy:
            log.info("AF_XDP on %s queue %d: copy mode (%s XDP; the driver offers no zero-copy): the kernel "
                     "copies each frame between its buffers and the UMEM", ifname, queue, self.mode)
        # One u32 row per ring struct (cached_prod, cached_cons, mask, size, pointers...).
        self._hdr = np.ctypeslib.as_array((ctypes.c_uint32 * (4 * ctypes.sizeof(_Ring) // 4))
                                          .from_buffer(self._rings)).reshape(4, -1)
        views = [_view(self._rings[r], 2 if r in (FILL, COMP) else 4) for r in (FILL, COMP, RX, TX)]
        self._fill_m, self._comp_m, self._rx_m, self._tx_m = (v[0] for v in views)
        self._ix = np.stack([v[1] for v in views])
        self.stats_user = np.zeros(3, np.int64)
        if pool is not None:
            _pool_fill(self._hdr, self._fill_m, self._ix, frame_size, pool.free_list, pool.n_free, pool.order_bits,
                       self.reserve)
            log.info("AF_XDP on %s queue %d: the UMEM is the packet pool (%d slots): frames are processed "
                     "where they are received and sent from there", ifname, queue, n_frames)
            return
        # Frames [0, half) circulate through fill/rx; [half, n_frames) are the free TX stack.
        half = ring_size
        addrs = np.arange(n_frames, dtype=np.int64) * frame_size
        if _fill_init(self._hdr, self._fill_m, self._ix, addrs[:half], half) != half:
            self.close()
            raise OSError(errno.EIO, "fill ring refused the initial frames")
        self._tx_frames = addrs[half:].copy()
        self._tx_free = np.array([half], np.int64)

    def _attach(self, lib: ctypes.CDLL, mode: str) -> None:
        """Create the UMEM and the socket, trying native then generic XDP (``auto``), and
        retrying for a while on EBUSY (a socket just closed on this queue is released late)."""
        modes = {"native": [XDP_FLAGS_DRV_MODE], "generic": [XDP_FLAGS_SKB_MODE],
                 "auto": [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]}[mode]
        deadline = time.monotonic() + 2.0
        i = 0
        while True:
            rc, what = self._try_attach(lib, modes[i])
            if rc == 0:
                self.mode = "native" if modes[i] == XDP_FLAGS_DRV_MODE else "generic"
                return
            if rc == -errno.EBUSY and time.monotonic() < deadline:
                time.sleep(0.05)
            elif i + 1 < len(modes):
                log.debug("native XDP on %s refused (%s), trying generic", self.ifname, os.strerror(-rc))
                i += 1
            else:
                _check(rc, what)

    def _try_attach(self, lib: ctypes.CDLL, xdp_flags: int) -> tuple[int, str]:
        """One attempt from a fresh UMEM (a failed one may leave the UMEM's socket bound)."""
        half = self.ring_size
        self._rings = (_Ring * 4)()
        # Own UMEM: fill/comp as large as each half, so the fill ring always has room for
        # every RX frame (the kernel may publish its consumer index late), comp for every
        # TX frame.  Pool UMEM: the fill ring is topped up to what it has room for, and
        # comp as large as TX holds every frame in flight.
        ucfg = _UmemConfig(half, half, self.frame_size, 0, 0)
        rc = lib.xsk_umem__create(ctypes.byref(self._umem_p), self.umem.ctypes.data, self.umem.nbytes,
                                  ctypes.byref(self._rings[FILL]), ctypes.byref(self._rings[COMP]),
                                  ctypes.byref(ucfg))
        if rc:
            return rc, "xsk_umem__create"
        scfg = _SocketConfig(half, half, 0, xdp_flags, XDP_USE_NEED_WAKEUP)
        rc = lib.xsk_socket__create(ctypes.byref(self._xsk), self.ifname.encode(), self.queue, self._umem_p,
                                    ctypes.byref(self._rings[RX]), ctypes.byref(self._rings[TX]),
                                    ctypes.byref(scfg))
        if rc:
            lib.xsk_umem__delete(self._umem_p)
            self._umem_p = ctypes.c_void_p()
        return rc, f"xsk_socket__create({self.ifname}, queue {self.queue})"

    def fileno(self) -> int:
        """The XDP socket (readable when the RX ring has frames)."""
        return self._sock.fileno()

    def receive(self, pool: PacketPool, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``max_frames`` frames as pool slots, and flags (all 0)."""
        out = np.empty(max_frames, np.int32)
        if self.pool is not None:
            if pool is not self.pool:
                raise ValueError("this port's UMEM is another pool")
            n = _pool_rx(self._hdr, self._ix, self._rx_m, self.frame_size, pool.off, pool.length, out)
            _pool_fill(self._hdr, self._fill_m, self._ix, self.frame_size, pool.free_list, pool.n_free,
                       pool.order_bits, self.reserve)
            if self._fill_m[self._ix[FILL, I_FLAGS]] & XDP_RING_NEED_WAKEUP:
                self._wake_rx()
            return out[:n], np.zeros(n, np.int64)
        n = _rx_burst(self.umem, self._hdr, self._ix, self._rx_m, self._fill_m, self.chunk_mask, pool.buf,
                      pool.off, pool.length, pool.free_list, pool.n_free, pool.order_bits, pool.max_frame, out,
                      self.stats_user)
        if self._fill_m[self._ix[FILL, I_FLAGS]] & XDP_RING_NEED_WAKEUP:
            self._wake_rx()
        return out[:n], np.zeros(n, np.int64)

    def send(self, pool: PacketPool, slots: np.ndarray) -> int:
        """Queue the slots' frames on the TX ring, kick the kernel if it asks; returns how many were queued.

        Frames that do not fit (no free UMEM frame or ring entry: the kernel
        is behind) are refused and counted, like the AF_PACKET TX ring.  With
        the UMEM as pool, every slot given is the port's from now on."""
        if self.pool is not None:
            if pool is not self.pool:
                raise ValueError("this port's UMEM is another pool")
            n = _pool_tx(self._hdr, self._ix, self._tx_m, self._comp_m, self.frame_size, pool.free_list,
                         pool.n_free, pool.off, pool.length, np.asarray(slots, np.int32), self.frame_size,
                         self.stats_user)
            if self._tx_m[self._ix[TX, I_FLAGS]] & XDP_RING_NEED_WAKEUP and self._tx_pending():
                self._kick()
            return n
        n = _tx_burst(self.umem, self._hdr, self._ix, self._tx_m, self._comp_m, self.chunk_mask, self.frame_size,
                      self._tx_frames, self._tx_free, pool.buf, pool.off, pool.length,
                      np.asarray(slots, np.int32), self.stats_user)
        if self._tx_m[self._ix[TX, I_FLAGS]] & XDP_RING_NEED_WAKEUP and self._tx_pending():
            self._kick()
        return n

    def _tx_pending(self) -> int:
        return (int(self._hdr[TX, C_PROD]) - int(self._tx_m[self._ix[TX, I_CONS]])) & M32

    def _kick(self) -> None:
        # Copy mode sends at most 32 descriptors per sendto() and answers EAGAIN when more remain.
        for _ in range(int(self._hdr[TX, SIZE]) // 32 + 1):
            try:
                self._sock.send(b"", socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                if not self._tx_pending():
                    return
            except OSError:
                return                                  # ENOBUFS/ENETDOWN...: the next kick retries

    def _wake_rx(self) -> None:
        try:
            self._sock.recv(0, socket.MSG_DONTWAIT)
        except OSError:
            pass

    def reclaim(self) -> int:
        """Take back the frames the kernel has finished sending; returns how many."""
        if self.pool is not None:
            return _pool_reclaim(self._hdr, self._ix, self._comp_m, self.frame_size, self.pool.free_list,
                                 self.pool.n_free)
        return _reclaim(self._hdr, self._ix, self._comp_m, self.chunk_mask, self._tx_frames, self._tx_free)

    def frames_accounted(self) -> int:
        """Own UMEM: frames free for TX plus frames posted for RX and not yet
        received, ``n_frames`` whenever nothing is in flight (no frame leaked).
        Pool UMEM: the slots the kernel holds (posted for RX and not received,
        or queued for TX and not completed)."""
        posted = (int(self._hdr[FILL, C_PROD]) - int(self._hdr[RX, C_CONS])) & M32
        if self.pool is not None:
            return posted + ((int(self._hdr[TX, C_PROD]) - int(self._hdr[COMP, C_CONS])) & M32)
        return int(self._tx_free[0]) + posted

    def stats(self) -> dict[str, int]:
        """The kernel's XDP_STATISTICS plus frames refused here."""
        raw = self._sock.getsockopt(SOL_XDP, XDP_STATISTICS, 48)
        names = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
                 "rx_fill_ring_empty_descs", "tx_ring_empty_descs")
        d = dict(zip(names, struct.unpack("6Q", raw)))
        d.update(rx_too_big=int(self.stats_user[S_RX_TOO_BIG]), tx_ring_full=int(self.stats_user[S_TX_FULL]),
                 tx_too_big=int(self.stats_user[S_TX_TOO_BIG]))
        return d

    def close(self) -> None:
        """Delete the socket (libxdp detaches its XDP program with the last one) and the UMEM."""
        for name in ("_hdr", "_fill_m", "_comp_m", "_rx_m", "_tx_m"):
            self.__dict__.pop(name, None)               # views into memory about to be unmapped
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        lib = _lib
        if self._xsk.value:
            lib.xsk_socket__delete(self._xsk)
            self._xsk = ctypes.c_void_p()
        if self._umem_p.value:
            rc = lib.xsk_umem__delete(self._umem_p)
            if rc < 0:
                log.warning("xsk_umem__delete: %s", os.strerror(-rc))
            self._umem_p = ctypes.c_void_p()
        if self.__dict__.pop("umem", None) is not None and self.pool is None:
            self._umem_map.close()

    def __enter__(self) -> XdpPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rx_queues(ifname: str) -> int:
    """How many RX queues ``ifname`` has in use (0 if sysfs does not say)."""
    try:
        return sum(q.startswith("rx-") for q in os.listdir(f"/sys/class/net/{ifname}/queues"))
    except OSError:
        return 0


def open_xdp(ifname: str, queue: int = 0, *, queues: int = 1, **kwargs) -> XdpPort | None:
    """An :class:`XdpPort` on ``ifname`` queue ``queue``, or None (with one warning
    line saying why) when AF_XDP cannot be used here, so the caller falls back
    to AF_PACKET.

    ``queues``: how many workers serve ``ifname``, one RX queue each (queues
    ``0 .. queues - 1``).  Refused when the interface has more RX queues than
    that: the XDP program hands the frames of a queue no socket serves to the
    kernel stack, where nothing forwards them."""
    had_program = _xdp_attached(ifname)
    try:
        n = rx_queues(ifname)
        if n > queues:
            raise OSError(errno.EOPNOTSUPP, f"{n} RX queues, {queues} served (one worker per queue)")
        if queue >= max(n, 1):
            raise OSError(errno.EINVAL, f"no RX queue {queue} ({n} queues)")
        return XdpPort(ifname, queue, **kwargs)
    except Exception as e:                              # no libxdp, kernel refusal, permissions...
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        log.warning("AF_XDP unavailable on %s queue %d (%s); using AF_PACKET instead", ifname, queue, why)
        if not had_program and _xdp_attached(ifname):
            # A half-made attempt (e.g. the program loaded, the socket refused) must not
            # leave a program behind: it would refuse the next attempt.
            subprocess.run(["ip", "link", "set", "dev", ifname, "xdpgeneric", "off"], capture_output=True)
            subprocess.run(["ip", "link", "set", "dev", ifname, "xdpdrv", "off"], capture_output=True)
        return None


def _xdp_attached(ifname: str) -> bool:
    """Whether an XDP program is attached to ``ifname`` (False if that cannot be told)."""
    try:
        r = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", ifname], capture_output=True, text=True)
        return bool(r.returncode == 0 and json.loads(r.stdout)[0].get("xdp"))
    except (OSError, ValueError, IndexError):
        return False
