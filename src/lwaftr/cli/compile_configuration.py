"""``lwaftr compile-configuration``: compile a binding table to its mappable binary form.

    lwaftr compile-configuration [--quiet] [--progress | --no-progress] CONF [OUT]

CONF is a ``snabb-softwire-v3`` configuration or a text binding-table file
(``.txt`` / ``.bt``, or a file whose first entry starts with an IPv4
address; see ``docs/binding-table-format.md``).  OUT defaults to
``CONF.lwbt``, the file ``compile_cached`` looks for.  Exit status 0 on
success, 2 on a configuration error, 1 if OUT cannot be written.
"""
from __future__ import annotations

import argparse
import sys

from lwaftr.cli import examples
from lwaftr.bindingtable.compiled import compile_file, compiled_path
from lwaftr.bindingtable.textformat import is_text_bindings, load_text
from lwaftr.config.errors import ConfigError
from lwaftr.config.load import load_config
from lwaftr.config.model import Bindings

PROG = "lwaftr compile-configuration"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile-configuration",
                       help="compile a binding table (snabb-softwire-v3 or text) to a mappable file",
                       **examples("lwaftr compile-configuration /etc/lwaftr/lwaftr.conf",
                                  "lwaftr compile-configuration -q table.txt /var/lib/lwaftr/table.lwbt"))
    p.add_argument("conf", metavar="CONF", help="snabb-softwire-v3 configuration or text binding table")
    p.add_argument("out", metavar="OUT", nargs="?", help="output file (default: CONF.lwbt)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show a progress bar on stderr")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show a progress bar")
    p.set_defaults(func=run)


def _snabb_bindings(path: str) -> Bindings:
    return load_config(path).bindings


def run(args: argparse.Namespace) -> int:
    conf = args.conf
    out = getattr(args, "out", None) or str(compiled_path(conf))
    text = is_text_bindings(conf)
    try:
        table, st = compile_file(conf, load_text if text else _snabb_bindings, out,
                                 getattr(args, "progress", None))
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: cannot write {out}: {e}", file=sys.stderr)
        return 1
    if not getattr(args, "quiet", False):
        kind = "text binding table" if text else "snabb-softwire-v3"
        addresses = int((table.addr_tab != 0).sum())
        print(f"{conf} ({kind}) -> {out}\n"
              f"  {st.softwires} softwires, {addresses} IPv4 addresses\n"
              f"  {st.file_size} bytes, {st.bytes_per_softwire:.1f} bytes per softwire\n"
              f"  {st.total_s:.2f} s (load {st.load_s:.2f} s, build {st.build_s:.2f} s, "
              f"write {st.write_s:.2f} s)")
    return 0
