"""Load a configuration file of any supported format into the model."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from lwaftr.bindingtable import compiled
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config import ietf
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import Bindings, Config
from lwaftr.config.snabb import dump_snabb, load_snabb, loads_snabb
from lwaftr.fileutil import write_atomic


def config_format(path: str | Path) -> str:
    """``ietf.XML``, ``ietf.JSON`` or ``ietf.SNABB``, by the file's first characters."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        raise ConfigError(f"cannot read: {getattr(e, 'strerror', None) or e}", file=str(path)) from None
    return ietf.sniff(head.decode("utf-8", "replace"))


def load_config(path: str | Path, *, table: bool = True) -> Config:
    """Load ``path``: a snabb-softwire-v3 data file, or an RFC 8676
    ietf-softwire-br configuration in XML or JSON (told apart by content).
    ``table=False``: leave a binding-table file an RFC 8676 configuration
    names unread (``config.binding_table_file`` says where it is)."""
    if config_format(path) == ietf.SNABB:
        return load_snabb(str(path))
    return ietf.load_ietf(path, table=table)


def _rest_path(path: str | Path) -> Path:
    """Where the configuration minus its binding table is kept beside ``CONF.lwbt``."""
    return Path(str(compiled.compiled_path(path)) + ".rest")


def _stamp(path: str | Path) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_table(path: str | Path, config: Config | None = None, *, private: bool = False
               ) -> tuple[Config, BindingTable]:
    """The configuration and its compiled binding table.

    The table comes from ``CONF.lwbt`` when that is up to date (memory-mapped,
    shared by every process that maps it), else it is compiled from the
    configuration and saved there for next time.  Beside it, ``CONF.lwbt.rest``
    keeps the rest of the configuration (everything but the softwires) for the
    same version of the file, so a start from an up-to-date compiled table does
    not parse a million softwires again; the returned ``config.bindings`` is
    then empty: the table is the binding table.  ``private``: a copy-on-write
    mapping, writeable for in-place edits (see ``compiled.load``).
    """
    out, rest = compiled.compiled_path(path), _rest_path(path)
    if config is None and compiled.is_fresh(path, out):
        try:
            saved = json.loads(rest.read_text())
            if saved.get("source") == _stamp(path):
                cfg = replace(loads_snabb(saved["config"], str(rest)), source=str(path))
                return cfg, compiled.load(out, private=private)
        except (OSError, ValueError, KeyError, ConfigError):
            pass                                    # missing, stale or damaged: the slow way
    config = config if config is not None else load_config(path, table=False)
    if config.binding_table_file is not None:
        ref = Path(config.binding_table_file)
        if ref.suffix == compiled.SUFFIX:
            return config, compiled.load(ref, private=private)
        from lwaftr.bindingtable.textformat import load_text
        return config, compiled.compile_cached(ref, load_text, private=private)
    table = compiled.compile_cached(path, lambda _: config.bindings, private=private)
    try:
        text = json.dumps({"source": _stamp(path), "config": dump_snabb(replace(config, bindings=Bindings.empty()))})
        write_atomic(rest, text.encode())
    except (OSError, ValueError):
        pass                                        # read-only directory: next start parses again
    return config, table


def main(argv: list[str]) -> int:
    """``python -m lwaftr.config.load CONF``: validate CONF and leave its compiled
    table and rest beside it, so that :func:`load_table` then only maps them
    (what a running instance does on reload, in a process of its own so that
    forwarding does not wait for a big table to compile)."""
    import sys
    try:
        load_table(argv[0])
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{argv[0]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
