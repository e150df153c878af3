"""Load a configuration file of any supported format into the model."""
from __future__ import annotations

from pathlib import Path

from lwaftr.config.model import Config
from lwaftr.config.snabb import load_snabb


def load_config(path: str | Path) -> Config:
    """Load ``path`` (today: snabb-softwire-v3 data files)."""
    return load_snabb(str(path))
