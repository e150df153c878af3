"""The reference engine: :class:`~reference.slowpath.SlowPath` behind the product
:class:`~lwaftr.dataplane.engine.Engine`'s interface, so that a test can run
either on the same traffic.

Every call is one batch of Python frames through every stage in Snabb's order;
VLAN tags are pushed and popped here as the kernels do.  :meth:`process` takes
and returns pool slots, as the product engine's does.
"""
from __future__ import annotations

import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.model import Config
from lwaftr.dataplane import stick, vlan
from lwaftr.dataplane.control import HOLD_LIMIT
from lwaftr.dataplane.engine import Frames, Output, slot_size
from lwaftr.dataplane.pool import PacketPool
from reference.slowpath import SlowPath


class ReferenceEngine:
    """One lwAFTR instance in plain Python: configuration, table, counters."""

    def __init__(self, config: Config, *, table: BindingTable | None = None, kernel: bool = False,
                 pool_slots: int = 4096, fragment_id_seeds: tuple[int, int] | None = None,
                 counters: np.ndarray | None = None) -> None:
        """As :class:`~lwaftr.dataplane.engine.Engine` (the hold limit as its: Snabb's
        link capacity, or an eighth of the pool if that is less)."""
        self.config = config
        self.kernel = kernel
        self.counters = counters if counters is not None else C.new_array()
        self.table = table if table is not None else BindingTable.build(config.bindings)
        self.pool = PacketPool(pool_slots, slot_size(config))
        self.hold_limit = min(HOLD_LIMIT, self.pool.n_slots // 8)
        self.slow = SlowPath(config, self.table, self.counters, kernel=kernel, fragment_id_seeds=fragment_id_seeds,
                             hold_limit=self.hold_limit)
        inst = config.instance
        self.vlan4 = inst.external.vlan_tag if inst.external.vlan_tag is not None else config.external.vlan_tag
        self.vlan6 = inst.internal.vlan_tag if inst.internal.vlan_tag is not None else config.internal.vlan_tag
        self.monitor = 0

    def set_table(self, table: BindingTable) -> None:
        self.table = table
        self.slow.set_table(table)

    def set_monitor(self, ipv4: int | None) -> None:
        """Mirror the frames of ``ipv4``'s subscribers, as received (None: stop)."""
        self.monitor = ipv4 or 0

    def set_next_hops(self, mac4: bytes | None, mac6: bytes | None) -> None:
        """Kernel mode: the next hops' MACs as the kernel knows them; built-in: MACs
        an earlier engine learned (None: keep asking)."""
        if self.kernel:
            self.slow.set_next_hops(mac4, mac6)
            return
        for stage, mac in ((self.slow.arp, mac4), (self.slow.ndp, mac6)):
            if mac is not None:
                stage.next_mac = mac

    def next_hop_macs(self) -> tuple[bytes | None, bytes | None]:
        return self.slow.arp.next_mac, self.slow.ndp.next_mac

    def _mirror(self, f4: list[bytes], f6: list[bytes]) -> list[bytes]:
        want = self.monitor.to_bytes(4, "big")
        o4 = W.ETH_HLEN + W.O_IPV4_DST
        o6 = W.ETH_HLEN + W.IPV6_HLEN + W.O_IPV4_SRC
        out = [f for f in f4 if f[12:14] == b"\x08\x00" and f[o4:o4 + 4] == want]
        out += [f for f in f6 if f[12:14] == b"\x86\xdd" and len(f) > o6 + 4 and f[20] == W.PROTO_IPV4
                and f[o6:o6 + 4] == want]
        return out

    def _untag(self, frames: list[bytes], vid: int | None) -> list[bytes]:
        if vid is None:
            return list(frames)
        out = []
        for f in frames:
            if vlan.vid_of(f) == vid:
                out.append(vlan.pop_tag(f))
            else:
                self.counters[C.DROP_WRONG_VLAN_PACKETS] += 1
        return out

    @staticmethod
    def _tag(frames: list[bytes], vid: int | None) -> list[bytes]:
        return frames if vid is None else [vlan.push_tag(f, vid) for f in frames]

    def process_frames(self, v4: list[bytes], v6: list[bytes], now: float) -> Frames:
        """Frames received on each side -> frames sent on each, for the TAPs, mirrored."""
        u4, u6 = self._untag(v4, self.vlan4), self._untag(v6, self.vlan6)
        mirrored = self._mirror(u4, u6) if self.monitor else []
        o4, o6 = self.slow.process(u4, u6, now)
        t4, t6 = self.slow.take_kernel_frames()
        return Frames(self._tag(o4, self.vlan4), self._tag(o6, self.vlan6), t4, t6, mirrored)

    def process(self, v4: np.ndarray, v6: np.ndarray, now: float) -> Output:
        """:meth:`process_frames` on pool slots (consumed); the caller frees the slots returned."""
        f4, f6 = self.pool.frames(v4), self.pool.frames(v6)
        self.pool.free(v4)
        self.pool.free(v6)
        out = self.process_frames(f4, f6, now)
        return Output(self.pool.store(out.v4), self.pool.store(out.v6), self.pool.store(out.kernel4),
                      self.pool.store(out.kernel6), out.mirrored)

    def split_stick(self, frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """On a stick: frames -> (IPv4 side's, IPv6 side's), as the product splits them
        (:func:`lwaftr.dataplane.stick.split_frames`); frames of neither side's VLAN counted."""
        vid4 = -1 if self.vlan4 is None else self.vlan4
        vid6 = -1 if self.vlan6 is None else self.vlan6
        return stick.split_frames(frames, vid4, vid6, self.counters)

    def process_stick(self, frames: list[bytes], now: float) -> list[bytes]:
        out = self.process_frames(*self.split_stick(frames), now)
        return out.v4 + out.v6
