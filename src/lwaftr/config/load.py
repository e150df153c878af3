"""Load a configuration file of any supported format into the model."""
from __future__ import annotations

from pathlib import Path

from lwaftr.bindingtable import compiled
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.model import Config
from lwaftr.config.snabb import load_snabb


def load_config(path: str | Path) -> Config:
    """Load ``path`` (today: snabb-softwire-v3 data files)."""
    return load_snabb(str(path))


def load_table(path: str | Path, config: Config | None = None) -> tuple[Config, BindingTable]:
    """The configuration and its compiled binding table.

    The table comes from ``PATH.lwbt`` when that is up to date (memory-mapped,
    shared by every process that maps it), else it is compiled from the
    configuration and saved there for next time.
    """
    config = config if config is not None else load_config(path)
    table = compiled.compile_cached(path, lambda _: config.bindings)
    return config, table
