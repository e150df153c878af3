"""The full per-frame pipeline in Python: every stage, every rare case.

Stages per side, in Snabb's order (``setup.lua``)::

    northbound: reassembly -> ingress filter -> ARP|NDP -> echo -> core
    southbound: core -> ARP|NDP (next-hop MACs) -> echo -> egress filter -> fragmentation

Frames here are untagged Ethernet ``bytes``; VLAN tags are the engine's job.
The batch is processed stage by stage (all frames through one stage, then
the next), which reproduces the order in which Snabb's app network emits
frames within one breath.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from lwaftr import counters as C
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.model import Config
from lwaftr.dataplane.bpf import PacketFilter
from reference.core import LwAftrCore
from reference.echo import Echo4Stage, Echo6Stage
from reference.fragment import Fragmenter4, Fragmenter6
from reference.neighbor import HOLD_LIMIT, ArpStage, NdpStage
from reference.punt import KernelNextHop, Punt
from reference.reassembly import Reassembler4, Reassembler6


def _filter(expr: str | None) -> PacketFilter | None:
    return PacketFilter(expr) if expr else None


class SlowPath:
    """All stages of one lwAFTR instance, on Python frames.

    With ``kernel`` (the kernel control-plane mode of ``lwaftr run``), what
    is not lwAFTR work goes to ``to_kernel4``/``to_kernel6`` instead of the
    built-in ARP/NDP/echo stages (see :mod:`lwaftr.dataplane.punt`), and the
    next hops' MACs are set from outside (:meth:`set_next_hops`).
    """

    def __init__(self, config: Config, table: BindingTable, counters: np.ndarray, *,
                 kernel: bool = False, fragment_id_seeds: tuple[int, int] | None = None,
                 rate_state: np.ndarray | None = None, hold_limit: int = HOLD_LIMIT) -> None:
        """``hold_limit``: frames held per side while its next hop is unresolved."""
        self.config = config
        self.c = counters
        inst = config.instance
        ext, int_ = config.external, config.internal
        self.reasm4 = Reassembler4(counters, ext.reassembly_max_fragments_per_packet, ext.reassembly_max_packets)
        self.reasm6 = Reassembler6(counters, int_.reassembly_max_fragments_per_packet, int_.reassembly_max_packets)
        self.in_filter4 = _filter(ext.ingress_filter)
        self.in_filter6 = _filter(int_.ingress_filter)
        self.out_filter4 = _filter(ext.egress_filter)
        self.out_filter6 = _filter(int_.egress_filter)
        self.punt: Punt | None = None
        self.to_kernel4: list[bytes] = []
        self.to_kernel6: list[bytes] = []
        self.arp: ArpStage | KernelNextHop
        self.ndp: NdpStage | KernelNextHop
        if kernel:
            self.punt = Punt(inst.external.ip, inst.internal.ip, inst.external.mac, table,
                             config.control_plane.answer_arp_for_softwires, counters)
            self.arp = KernelNextHop(counters, inst.external.mac, inst.external.next_hop.mac,
                                     C.DROP_NO_NEXT_HOP_IPV4_PACKETS)
            self.ndp = KernelNextHop(counters, inst.internal.mac, inst.internal.next_hop.mac,
                                     C.DROP_NO_NEXT_HOP_IPV6_PACKETS)
        else:
            self.arp = ArpStage(counters, inst.external.ip, inst.external.mac,
                                inst.external.next_hop.ip, inst.external.next_hop.mac, hold_limit=hold_limit)
            self.ndp = NdpStage(counters, inst.internal.ip, inst.internal.mac,
                                inst.internal.next_hop.ip, inst.internal.next_hop.mac, hold_limit=hold_limit)
        self.echo4 = Echo4Stage(counters, inst.external.ip)
        self.echo6 = Echo6Stage(counters, inst.internal.ip)
        self.core = LwAftrCore(config, table, counters, rate_state)
        seed4, seed6 = fragment_id_seeds or (None, None)
        self.frag4 = Fragmenter4(counters, ext.mtu, seed4)
        self.frag6 = Fragmenter6(counters, int_.mtu, seed6)

    def set_table(self, table: BindingTable) -> None:
        self.core.table = table
        if self.punt is not None:
            self.punt.set_table(table)

    def set_next_hops(self, mac4: bytes | None, mac6: bytes | None) -> None:
        """Kernel mode: the next hops' MACs as the kernel knows them (None: unknown)."""
        assert isinstance(self.arp, KernelNextHop) and isinstance(self.ndp, KernelNextHop)
        self.arp.next_mac, self.ndp.next_mac = mac4, mac6

    def _process_kernel(self, v4: list[bytes], v6: list[bytes], now: float, whole4: list[bytes],
                        whole6: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """Kernel mode: punt what is the kernel's, the rest through reassembly,
        the ingress filter and the core; MACs from the kernel's next hops."""
        assert self.punt is not None
        v4, k4, arp_replies = self.punt.split4(v4)
        v6, k6 = self.punt.split6(v6)
        for frames, filt, drop_idx, dest, counter in (
                (k4, self.in_filter4, C.DROP_INGRESS_FILTER_IPV4_PACKETS, self.to_kernel4,
                 C.TO_KERNEL_IPV4_INTERFACE_PACKETS),
                (k6, self.in_filter6, C.DROP_INGRESS_FILTER_IPV6_PACKETS, self.to_kernel6,
                 C.TO_KERNEL_IPV6_INTERFACE_PACKETS)):
            for f in frames:
                if filt is not None and not filt(f):
                    self.c[drop_idx] += 1
                else:
                    dest.append(f)
                    self.c[counter] += 1
        north4 = self._northbound(v4, self.reasm4, self.in_filter4, C.DROP_INGRESS_FILTER_IPV4_PACKETS, now, whole4)
        north6 = self._northbound(v6, self.reasm6, self.in_filter6, C.DROP_INGRESS_FILTER_IPV6_PACKETS, now, whole6)
        out = self.core.process(north6, north4, now)
        south4 = arp_replies + [g for g in map(self.arp.to_wire, out.v4) if g is not None]
        south6 = [g for g in map(self.ndp.to_wire, out.v6) if g is not None]
        return (self._southbound(south4, self.out_filter4, C.DROP_EGRESS_FILTER_IPV4_PACKETS, self.frag4),
                self._southbound(south6, self.out_filter6, C.DROP_EGRESS_FILTER_IPV6_PACKETS, self.frag6))

    def take_kernel_frames(self) -> tuple[list[bytes], list[bytes]]:
        """Frames for the kernel (IPv4 side, IPv6 side) since the last call."""
        k4, k6 = self.to_kernel4, self.to_kernel6
        self.to_kernel4, self.to_kernel6 = [], []
        return k4, k6

    def process(self, v4: list[bytes], v6: list[bytes], now: float, *, whole4: list[bytes] = (),
                whole6: list[bytes] = ()) -> tuple[list[bytes], list[bytes]]:
        """One batch in, what leaves each interface out.  ``whole4``/``whole6``:
        packets the kernels have reassembled (:mod:`lwaftr.dataplane.defrag`),
        which join after reassembly (and are the data plane's, in kernel mode).

        Southbound order is Snabb's (its chain is core -> ARP|NDP -> echo ->
        egress filter -> fragmenter, so echo replies skip the MAC rewrite):
        echo replies, then neighbour requests and replies, then the core's
        frames (and frames held for an unresolved next hop, once resolved).
        """
        if self.punt is not None:
            return self._process_kernel(v4, v6, now, whole4, whole6)
        pre4, pre6 = self.arp.poll(now), self.ndp.poll(now)

        north4 = self._northbound(v4, self.reasm4, self.in_filter4, C.DROP_INGRESS_FILTER_IPV4_PACKETS, now, whole4)
        north6 = self._northbound(v6, self.reasm6, self.in_filter6, C.DROP_INGRESS_FILTER_IPV6_PACKETS, now, whole6)

        north4, nb4 = self._neighbor(self.arp, north4, pre4, now)
        north6, nb6 = self._neighbor(self.ndp, north6, pre6, now)
        nb4 += self.arp.flush()
        nb6 += self.ndp.flush()
        north4, echo4 = self._echo(self.echo4, north4)
        north6, echo6 = self._echo(self.echo6, north6)

        out = self.core.process(north6, north4, now)

        south4 = echo4 + nb4 + [g for g in map(self.arp.to_wire, out.v4) if g is not None]
        south6 = echo6 + nb6 + [g for g in map(self.ndp.to_wire, out.v6) if g is not None]
        return (self._southbound(south4, self.out_filter4, C.DROP_EGRESS_FILTER_IPV4_PACKETS, self.frag4),
                self._southbound(south6, self.out_filter6, C.DROP_EGRESS_FILTER_IPV6_PACKETS, self.frag6))

    @property
    def holding(self) -> bool:
        """Frames wait for a next hop's MAC (the slow path must run each batch)."""
        return bool(self.arp.held or self.ndp.held)

    def _northbound(self, frames: list[bytes], reasm, filt: PacketFilter | None, drop_idx: int,
                    now: float, whole: list[bytes] = ()) -> list[bytes]:
        out = []
        # push_batch keeps Snabb's order: whole packets first, then reassembled ones.
        for g in [*reasm.push_batch(frames, now), *whole]:
            if filt is not None and not filt(g):
                self.c[drop_idx] += 1
                continue
            out.append(g)
        return out

    @staticmethod
    def _neighbor(stage, frames: list[bytes], south: list[bytes], now: float) -> tuple[list[bytes], list[bytes]]:
        north = []
        for f in frames:
            up, down = stage.from_wire(f, now)
            if up is not None:
                north.append(up)
            south.extend(down)
        return north, south

    @staticmethod
    def _echo(stage, frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        north, replies = [], []
        for f in frames:
            up, reply = stage.from_wire(f)
            if up is not None:
                north.append(up)
            if reply is not None:
                replies.append(reply)
        return north, replies

    def _southbound(self, frames: list[bytes], filt: PacketFilter | None, drop_idx: int,
                    frag: Callable) -> list[bytes]:
        kept = []
        for f in frames:
            if filt is not None and not filt(f):
                self.c[drop_idx] += 1
                continue
            kept.append(f)
        return frag.push_batch(kept)
