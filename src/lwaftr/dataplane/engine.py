"""The engine: one lwAFTR instance, sans I/O.

Frames in (per interface, or one stream on a stick), frames and counters out.
Every command (``check``, ``bench``, ``run``) drives this same class; only
the edges that feed it differ.

Two ways in:

* :meth:`Engine.process` takes batches of slots of the engine's
  :class:`~lwaftr.dataplane.pool.PacketPool` (the live and bench paths): the
  compiled kernels (:func:`lwaftr.dataplane.kernels.fast_batch`) take every
  frame in place, packets reassembled beyond a slot included.  It returns
  everything the batch produces (:class:`Output`): each side's frames, the
  frames for the kernel's TAPs, the mirrored frames.
* :meth:`Engine.process_frames` takes Python ``bytes`` (``check`` and tests):
  the frames are copied into the pool and go the same way (:class:`Frames`).

No frame goes to Python: the reference the kernels are tested against (a
plain Python model of every stage) lives with the tests.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.model import Config
from lwaftr.dataplane import kernels as K
from lwaftr.dataplane import batch
from lwaftr.dataplane import bpfjit
from lwaftr.dataplane import defrag
from lwaftr.dataplane import fragids
from lwaftr.dataplane import stick
from lwaftr.dataplane import vlan
from lwaftr.dataplane.bpf import PacketFilter
from lwaftr.dataplane.control import HOLD_LIMIT
from lwaftr.dataplane.icmperr import new_rate_state
from lwaftr.dataplane.pool import HEADROOM, PacketPool

#: Reassembled packets too large for a pool slot, per side and batch, which the
#: kernels' passes take in a buffer of their own: the per-batch budget for work
#: costlier than the common path (beyond it: dropped, counted ``drop-over-budget-packets``
#: and alarmed).
BIG_PER_BATCH = 8
#: Mirrored frames (the monitor's copies) per batch at most.
MIRROR_PER_BATCH = 64


class Output(NamedTuple):
    """What one batch of :meth:`Engine.process` produces.  Every slot is the
    caller's (free it after transmitting or writing it)."""

    v4: np.ndarray          #: slots to send on the IPv4 interface
    v6: np.ndarray          #: slots to send on the IPv6 interface
    kernel4: np.ndarray     #: kernel mode: slots for the IPv4 side's TAP (untagged frames)
    kernel6: np.ndarray     #: kernel mode: slots for the IPv6 side's TAP
    mirrored: list[bytes]   #: monitor on: the watched subscriber's frames, as received

    def slots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every slot array, to free (or hand on) them all."""
        return self.v4, self.v6, self.kernel4, self.kernel6


class Frames(NamedTuple):
    """What :meth:`Engine.process_frames` produces: :class:`Output` as ``bytes``."""

    v4: list[bytes]
    v6: list[bytes]
    kernel4: list[bytes]
    kernel6: list[bytes]
    mirrored: list[bytes]


_NONE = np.zeros(0, np.int32)
#: Each side's next hop in the kernels' state (IPv4 side, IPv6 side): its MAC's row in
#: ``Engine.macs``, and the parameters saying whether it is known and when to ask again.
_NEXT_HOP = ((K.M_EXT_NEXT, K.P_V4_RESOLVED, K.P_V4_POLL_AT), (K.M_INT_NEXT, K.P_V6_RESOLVED, K.P_V6_POLL_AT))


def _read_only(table: BindingTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table's arrays as read-only views for the kernels, which only read them.  A
    mapped compiled table's arrays are read-only already, and numba compiles a kernel
    apart for each kind of array: this way the kernels are compiled once, not twice.
    The views share the arrays' memory, so changes made in place are seen."""
    views = tuple(a.view() for a in (table.addr_tab, table.sw_tab, table.br_tab))
    for v in views:
        v.setflags(write=False)
    return views


def slot_size(config: Config) -> int:
    """The packet-pool slot size ``config``'s MTUs need (2048 bytes up to ~1.9k MTUs)."""
    biggest = max(config.external.mtu, config.internal.mtu) + W.ETH_HLEN + W.VLAN_HLEN + W.IPV6_HLEN
    return max(2048, -(-(HEADROOM + biggest) // 64) * 64)


class Engine:
    """An lwAFTR instance: configuration, binding table, counters, stages."""

    def __init__(self, config: Config, *, table: BindingTable | None = None, pool_slots: int = 4096,
                 max_batch: int = 4096, kernel: bool = False, mirror_budget: int = MIRROR_PER_BATCH,
                 counters: np.ndarray | None = None, fragment_id_seeds: tuple[int, int] | None = None,
                 pool: PacketPool | None = None) -> None:
        """``kernel``: the kernel is the control plane (see :mod:`lwaftr.dataplane.control`);
        ``pool``: the packet pool to use (a rebuilt engine keeps the one its ports
        receive into), else a new one of ``pool_slots``; ValueError if its slots
        are too small for this configuration's MTUs, or an MTU is below its minimum;
        ``mirror_budget``: the monitor's copies per batch at most;
        ``counters``: an array to count in (e.g. in shared memory), else a new one;
        ``fragment_id_seeds``: the (IPv4, IPv6) fragment IDs to count up from (``check``
        reproducing Snabb's vectors), else random ones (:mod:`lwaftr.dataplane.fragids`)."""
        self.config = config
        ext, int_ = config.external, config.internal
        fragids.check_mtus(ext.mtu, int_.mtu)
        self.counters = counters if counters is not None else C.new_array()
        self.table = table if table is not None else BindingTable.build(config.bindings)
        self.kernel = kernel
        self.rate_state = new_rate_state()       # ICMP error rate limiters
        slot = slot_size(config)
        if pool is not None and pool.slot_size < slot:
            raise ValueError(f"the MTUs need {slot}-byte packet slots, the running pool has "
                             f"{pool.slot_size}: restart to use them")
        self.pool = pool if pool is not None else PacketPool(pool_slots, slot)
        # Frames held per side while its next hop is unresolved (built-in control plane), in
        # their slots: Snabb's link capacity, or an eighth of the pool if that is less.
        self.hold_limit = min(HOLD_LIMIT, self.pool.n_slots // 8)
        self._held = (np.empty(self.hold_limit, np.int32), np.empty(self.hold_limit, np.int32))
        self._n_held = [0, 0]
        seed4, seed6 = fragment_id_seeds or (None, None)
        self._ids4 = fragids.new_ids(seed4, fragids.ID_MASK4)    # the last fragment IDs used
        self._ids6 = fragids.new_ids(seed6, fragids.ID_MASK6)
        inst = config.instance
        self.vlan4 = inst.external.vlan_tag if inst.external.vlan_tag is not None else config.external.vlan_tag
        self.vlan6 = inst.internal.vlan_tag if inst.internal.vlan_tag is not None else config.internal.vlan_tag
        P = np.zeros(K.N_PARAMS, np.int64)
        P[K.P_EXT_IP] = int.from_bytes(inst.external.ip, "big")
        P[K.P_INT_MTU] = int_.mtu
        P[K.P_EXT_MTU] = ext.mtu
        P[K.P_HAIRPINNING] = int(int_.hairpinning)
        P[K.P_FLOW_LABEL] = int_.flow_label
        P[K.P_VLAN4] = -1 if self.vlan4 is None else self.vlan4
        P[K.P_VLAN6] = -1 if self.vlan6 is None else self.vlan6
        P[K.P_ICMP4_ERRORS] = int(ext.generate_icmp_errors)
        P[K.P_ICMP6_ERRORS] = int(int_.generate_icmp_errors)
        P[K.P_ALLOW_ICMP4] = int(ext.allow_incoming_icmp)
        P[K.P_ALLOW_ICMP6] = int(int_.allow_incoming_icmp)
        P[K.P_INT_IP_HI], P[K.P_INT_IP_LO] = np.frombuffer(inst.internal.ip, ">u8").astype(np.uint64).view(np.int64)
        P[K.P_RATE4_PACKETS], P[K.P_RATE4_PERIOD] = ext.error_rate_limit_packets, ext.error_rate_limit_period
        P[K.P_RATE6_PACKETS], P[K.P_RATE6_PERIOD] = int_.error_rate_limit_packets, int_.error_rate_limit_period
        # The pcap filters (libpcap-compiled classic BPF) run inside the kernels, compiled
        # to machine code: in the order K.F_IN4 .. K.F_OUT6.
        progs = [PacketFilter(expr).prog if expr else None
                 for expr in (ext.ingress_filter, int_.ingress_filter, ext.egress_filter, int_.egress_filter)]
        self.filter_fn = bpfjit.compile_filters(progs)
        self.filter_index = bpfjit.filter_index(progs)
        P[K.P_PUNT] = int(kernel)
        nh4 = inst.external.next_hop.ip
        P[K.P_EXT_NEXT_IP] = -1 if nh4 is None else int.from_bytes(nh4, "big")
        P[K.P_PROXY_ARP] = int(config.control_plane.answer_arp_for_softwires)
        nh6 = inst.internal.next_hop.ip
        if nh6 is not None:
            P[K.P_INT_NEXT_SET] = 1
            P[K.P_INT_NEXT_HI], P[K.P_INT_NEXT_LO] = np.frombuffer(nh6, ">u8").astype(np.uint64).view(np.int64)
        P[K.P_V4_POLL_AT] = P[K.P_V6_POLL_AT] = -1      # unresolved: ask at the first batch
        self.params = P
        self.macs = np.zeros((4, 6), np.uint8)
        self.macs[K.M_EXT_SELF] = np.frombuffer(inst.external.mac, np.uint8)
        self.macs[K.M_INT_SELF] = np.frombuffer(inst.internal.mac, np.uint8)
        # Configured next-hop MACs (static); kernel mode: until the kernel's neighbours say otherwise.
        self._set_mac(0, inst.external.next_hop.mac)
        self._set_mac(1, inst.internal.next_hop.mac)
        # Per-batch scratch and outputs, allocated once.
        self.max_batch = max_batch
        self._scratch = np.zeros((K.N_SCRATCH, max(max_batch, 4)), np.int64)
        self._keep = np.empty(max_batch, np.uint8)
        # Every fragment the kernels cut (kernels._fragment6, frag4.fragment4) has a slot of its own.
        self._out4 = np.empty(2 * max_batch + self.pool.n_slots, np.int32)
        self._frags = np.empty(self.pool.n_slots, np.int32)
        self._out6 = np.empty(2 * max_batch + len(self._frags), np.int32)
        self._kern4 = np.empty(max_batch, np.int32)
        self._kern6 = np.empty(max_batch, np.int32)
        self._mirrored = np.empty(max(mirror_budget, 1), np.int32)     # the monitor's copies (slots)
        self.monitor = 0
        # Reassembly in the kernels: fragments are held in their slots, a quarter of the
        # pool at most, so fragments cannot take the pool from forwarding.
        held = max(1, self.pool.n_slots // 4)
        self.defrag4 = defrag.Defrag(4, ext.reassembly_max_fragments_per_packet, ext.reassembly_max_packets,
                                     max_held=held)
        self.defrag6 = defrag.Defrag(6, int_.reassembly_max_fragments_per_packet, int_.reassembly_max_packets,
                                     max_held=held)
        big = lambda: (np.empty((BIG_PER_BATCH, HEADROOM + defrag.SNABB_MAX_FRAME), np.uint8),   # noqa: E731
                       np.full(BIG_PER_BATCH, HEADROOM, np.int32), np.zeros(BIG_PER_BATCH, np.int32),
                       np.zeros(1, np.int64))
        self._reasm = (defrag.state(self.defrag4), defrag.state(self.defrag6), *big(), *big())
        pool, t = self.pool, self.table
        self._state = batch.make(
            pool.buf, pool.off, pool.length, pool.free_list, pool.n_free, P, self.macs, *_read_only(t),
            self.counters, self._scratch, self._keep, self._out4, self._out6, self.rate_state, self.filter_fn,
            self.filter_index, self._ids6, self._frags, self._reasm, self._kern4, self._kern6, self._ids4,
            self._mirrored)

    # -- tables ----------------------------------------------------------------
    def release(self) -> None:
        """Give back the slots this engine's reassembly holds, for an engine that
        replaces it on the same pool (a reload that rebuilds the engine)."""
        for d in (self.defrag4, self.defrag6):
            st = defrag.state(d)
            defrag.release_all(*st[:8], self.pool.free_list, self.pool.n_free)
        for j in (0, 1):
            self.pool.free(self._held[j][:self._n_held[j]])
            self._n_held[j] = 0

    def set_table(self, table: BindingTable) -> None:
        """Swap in a new binding table; takes effect from the next batch."""
        self.table = table
        batch.set_tables(self._state, *_read_only(table))

    # -- monitoring one subscriber -----------------------------------------------
    def set_monitor(self, ipv4: int | None) -> None:
        """Mirror the traffic of the subscriber(s) of ``ipv4`` (None: stop).

        A copy of each frame from the Internet to that address and each
        IPv4-in-IPv6 frame from its B4s, as received, is in
        :attr:`Output.mirrored`, at most ``mirror_budget`` a batch (the rest
        counted: ``monitor-skipped-packets``); the frames themselves go on as
        any other (:mod:`lwaftr.dataplane.monitor`).
        """
        self.monitor = ipv4 or 0
        self.params[K.P_MONITOR] = self.monitor

    # -- next hops ---------------------------------------------------------------
    def set_next_hops(self, mac4: bytes | None, mac6: bytes | None) -> None:
        """The next hops' MACs.  Kernel mode: as the kernel knows them (None while it has
        none).  Built-in control plane: as an engine this one replaces learned them (None:
        keep asking)."""
        for j, mac in enumerate((mac4, mac6)):
            if mac is not None or self.kernel:
                self._set_mac(j, mac)

    def next_hop_macs(self) -> tuple[bytes | None, bytes | None]:
        """The next hops' MACs, IPv4 side and IPv6 side (None: unresolved)."""
        return tuple(self.macs[row].tobytes() if self.params[known] else None for row, known, _ in _NEXT_HOP)

    def _set_mac(self, j: int, mac: bytes | None) -> None:
        """Side ``j``'s (0: IPv4, 1: IPv6) next-hop MAC for the kernels (None: unknown)."""
        row, known, _ = _NEXT_HOP[j]
        self.macs[row] = 0 if mac is None else np.frombuffer(mac, np.uint8)
        self.params[known] = mac is not None

    def from_kernel(self, frames: list[bytes], side: int) -> np.ndarray:
        """Frames the kernel sent on a TAP -> pool slots to transmit on that side
        (4 or 6), VLAN-tagged as the side is."""
        if not frames:
            return np.zeros(0, np.int32)
        if side == 4:
            self.counters[C.FROM_KERNEL_IPV4_INTERFACE_PACKETS] += len(frames)
            return self._store(self._tag(frames, self.vlan4))
        self.counters[C.FROM_KERNEL_IPV6_INTERFACE_PACKETS] += len(frames)
        return self._store(self._tag(frames, self.vlan6))

    # -- slots -------------------------------------------------------------------
    def process(self, v4: np.ndarray, v6: np.ndarray, now: float) -> Output:
        """A batch of pool slots from each interface -> everything it produces:
        slots to send on each, for the kernel's TAPs, and the mirrored frames.

        The caller owns the returned slots (free them after transmitting);
        the input slots are consumed.  Each side's frames leave in the order
        Snabb's stages emit them; frames held for a next hop that this batch
        taught leave after the answers, before the batch's own.
        """
        if len(v4) > self.max_batch or len(v6) > self.max_batch:
            raise ValueError(f"batch larger than {self.max_batch}")
        v4 = np.ascontiguousarray(v4, np.int32)
        v6 = np.ascontiguousarray(v6, np.int32)
        out4, out6 = self._out4, self._out6
        k4, k6, nk4, nk6, nm, h4, h6 = batch.run_batch(self._state, v4, v6, float(now))
        if h4 or h6:
            self._hold(out4[k4:k4 + h4], 0)
            self._hold(out6[k6:k6 + h6], 1)
        fast4, fast6 = out4[:k4].copy(), out6[:k6].copy()
        if self._n_held[0] or self._n_held[1]:      # the batch taught the next hop: what waited for it
            at4, at6 = self._scratch[K.S_COUNT, 2:4]
            fast4 = np.concatenate((fast4[:at4], self._send_held(0), fast4[at4:]))
            fast6 = np.concatenate((fast6[:at6], self._send_held(1), fast6[at6:]))
        kern4 = self._kern4[:nk4].copy() if nk4 else _NONE
        kern6 = self._kern6[:nk6].copy() if nk6 else _NONE
        mirrored = []
        if nm:
            mirrored = self.pool.frames(self._mirrored[:nm])
            self.pool.free(self._mirrored[:nm])
        return Output(fast4, fast6, kern4, kern6, mirrored)

    def _hold(self, slots: np.ndarray, j: int) -> None:
        """Frames the kernels held for side ``j``'s unresolved next hop (0: IPv4, 1: IPv6)
        kept until it resolves, up to :attr:`hold_limit` (beyond: dropped and counted, as
        Snabb's neighbour apps' links drop); in kernel mode, dropped and counted at once."""
        if not len(slots):
            return
        kept = 0 if self.kernel else min(len(slots), self.hold_limit - self._n_held[j])
        n = self._n_held[j]
        self._held[j][n:n + kept] = slots[:kept]
        self._n_held[j] = n + kept
        self.counters[C.NEXT_HOP_HELD_PACKETS] += kept
        self.counters[(C.DROP_NO_NEXT_HOP_IPV4_PACKETS, C.DROP_NO_NEXT_HOP_IPV6_PACKETS)[j]] += len(slots) - kept
        self.pool.free(slots[kept:])

    def _send_held(self, j: int) -> np.ndarray:
        """The frames held for side ``j``, if its next hop is now known: sent
        (:func:`~lwaftr.dataplane.kernels.release`), oldest first."""
        n = self._n_held[j]
        if not n or not self.params[_NEXT_HOP[j][1]]:
            return _NONE
        self._n_held[j] = 0
        pool = self.pool
        out = np.empty(pool.n_slots, np.int32)
        k = K.release(pool.buf, pool.off, pool.length, pool.free_list, pool.n_free, self._held[j][:n].copy(),
                      (K.FAM4, K.FAM6)[j], self.params, self.macs, self.filter_fn, self.filter_index,
                      self._ids6, self._ids4, self.counters, out, np.empty(pool.n_slots, np.int32))
        return out[:k]

    def batch_codes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The last batch's per-frame next nodes (``kernels.TX``, ``DROP``, ...) and
        error codes (rows of :data:`lwaftr.counters.ERRORS`) as (next4, error4, next6,
        error6), in batch order after untagging and reassembly: a packet trace."""
        sc = self._scratch
        n4, n6 = int(sc[K.S_COUNT, 0]), int(sc[K.S_COUNT, 1])
        return (sc[K.S_NEXT4, :n4].copy(), sc[K.S_ERROR4, :n4].copy(),
                sc[K.S_NEXT6, :n6].copy(), sc[K.S_ERROR6, :n6].copy())

    def _store(self, frames: list[bytes]) -> np.ndarray:
        fits = [f for f in frames if len(f) <= self.pool.max_frame]
        if len(fits) != len(frames):   # (a kernel's frame longer than a slot) never crash
            self.counters[C.DROP_FRAME_TOO_BIG_PACKETS] += len(frames) - len(fits)
        return self.pool.store(fits)

    @staticmethod
    def _tag(frames: list[bytes], vid: int | None) -> list[bytes]:
        return frames if vid is None else [vlan.push_tag(f, vid) for f in frames]

    # -- Python frames -------------------------------------------------------
    def process_frames(self, v4: list[bytes], v6: list[bytes], now: float) -> Frames:
        """Frames received on the IPv4 and IPv6 interfaces -> frames sent on each
        (and for the TAPs, and mirrored).

        The whole call is one batch with Snabb's exact output order if it fits
        (``max_batch`` a side, and half the free slots); else it goes in batches
        that do, in order.  A frame longer than a slot is dropped and counted
        (``drop-rx-too-big-packets``), as a port drops it.
        """
        pool = self.pool
        fits = [[f for f in side if len(f) <= pool.max_frame] for side in (v4, v6)]
        self.counters[C.DROP_RX_TOO_BIG_PACKETS] += len(v4) + len(v6) - len(fits[0]) - len(fits[1])
        v4, v6 = fits
        room = max(1, min(self.max_batch, pool.n_free[0] // 4))
        out = Frames([], [], [], [], [])
        for at in range(0, max(len(v4), len(v6), 1), room):
            o = self.process(pool.store(v4[at:at + room]), pool.store(v6[at:at + room]), now)
            for got, slots in zip(out, o.slots()):
                got += pool.frames(slots)
                pool.free(slots)
            out.mirrored.extend(o.mirrored)
        return out

    def _vids(self) -> tuple[int, int]:
        return (-1 if self.vlan4 is None else self.vlan4), (-1 if self.vlan6 is None else self.vlan6)

    def split_stick(self, frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """On a stick, one port carries both sides: frames -> (IPv4 side's, IPv6
        side's), by :func:`lwaftr.dataplane.stick.split_frames` (frames of neither
        side's VLAN are counted and dropped)."""
        return stick.split_frames(frames, *self._vids(), self.counters)

    def split_stick_slots(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On a stick: received pool slots -> (IPv4 side's, IPv6 side's), compiled;
        slots of neither side's VLAN are counted and freed."""
        slots = np.asarray(slots, np.int32)
        out4, out6 = np.empty(len(slots), np.int32), np.empty(len(slots), np.int32)
        vid4, vid6 = self._vids()
        pool = self.pool
        n4, n6 = stick.split(pool.buf, pool.off, pool.length, slots, vid4, vid6, self.counters, pool.free_list,
                             pool.n_free, out4, out6)
        return out4[:n4], out6[:n6]

    def process_stick(self, frames: list[bytes], now: float) -> list[bytes]:
        """On-a-stick mode: one stream in, one stream out (IPv4 side first)."""
        out = self.process_frames(*self.split_stick(frames), now)
        return out.v4 + out.v6
