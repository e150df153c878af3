"""Compile (or load from numba's cache) every kernel once, before traffic."""
from __future__ import annotations


def warm_up() -> None:
    from lwaftr.bindingtable.table import BindingTable
    from lwaftr.dataplane.engine import Engine
    from lwaftr.examples import example_config

    cfg = example_config()
    _run(Engine(cfg))
    # Memory-mapped compiled tables are read-only arrays: numba compiles lookups on those
    # apart (the kernels always see read-only views: engine._read_only).
    table = BindingTable.build(cfg.bindings)
    for a in (table.addr_tab, table.sw_tab, table.br_tab):
        a.setflags(write=False)
    _run(Engine(cfg, table=table))


def _run(engine) -> None:
    from lwaftr.examples import example_traffic

    traffic = example_traffic()
    v4 = [f for _, side, f in traffic if side == "v4"]
    v6 = [f for _, side, f in traffic if side == "v6"]
    engine.process_frames(v4, v6, 0.0)
