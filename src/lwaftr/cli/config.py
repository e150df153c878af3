"""``lwaftr config``: work with configuration files (and, later, running instances).

    lwaftr config convert [--to ietf-xml|ietf-json|snabb] [--binding-table-file FILE] IN OUT
    lwaftr config validate FILE
    lwaftr config get|set|add|remove [--name N] PATH [VALUE]   (a running instance: cli/config_live.py)

``convert`` reads any supported format (snabb-softwire-v3 text, or RFC 8676
ietf-softwire-br + lwaftr-softwire-ext in XML or JSON; told apart by content)
and writes it in the target format: ``--to``, or OUT's suffix (``.xml``,
``.json``, ``.conf``).  OUT ``-`` is standard output.  What the target cannot
express is refused with the reason (exit status 2), e.g. softwires that share
a B4 address or a 16-bit PSID in RFC 8676 binding entries:
``--binding-table-file FILE`` then writes the softwires to FILE (text
binding-table format) and makes OUT name it instead.  An RFC 8676 input that
names a binding-table file keeps naming it in RFC 8676 output.

``validate`` loads FILE (and a binding-table file it names) with every check
the data plane's loader makes, and prints a one-line summary.

Each subcommand is an entry of SUBCOMMANDS: ``add_<name>(subparsers)`` and a
``run`` function; subcommands that talk to a running instance (get, set, add,
remove) go beside these.  Exit status: 0 success, 2 a configuration that does not load or
cannot be expressed, or a file that cannot be read or written.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from lwaftr.cli import config_live, examples
from lwaftr.config import ietf
from lwaftr.config.errors import ConfigError
from lwaftr.config.load import config_format, load_config
from lwaftr.config.snabb import dump_snabb
from lwaftr.fileutil import write_atomic

PROG = "lwaftr config"
#: --to value -> (format, description)
TARGETS = {"ietf-xml": ietf.XML, "ietf-json": ietf.JSON, "snabb": ietf.SNABB}
_SUFFIXES = {".xml": "ietf-xml", ".json": "ietf-json", ".conf": "snabb"}
_FORMAT_NAMES = {ietf.XML: "RFC 8676 XML", ietf.JSON: "RFC 8676 JSON", ietf.SNABB: "snabb-softwire-v3"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="convert and validate configurations; read and change a running one",
                       description="Convert and validate lwAFTR configuration files; read and change a "
                                   "running instance's configuration.",
                       **examples("lwaftr config validate lwaftr.conf", "lwaftr config convert lwaftr.conf lwaftr.xml",
                                  "lwaftr config get /softwire-config/external-interface/mtu"))
    inner = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", help="what to do (each has its own -h)")
    inner.required = True
    for add in SUBCOMMANDS.values():
        add(inner)


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert between snabb-softwire-v3 and RFC 8676 (XML, JSON)",
                       description="Convert a configuration to another format.",
                       **examples("lwaftr config convert lwaftr.conf lwaftr.xml",
                                  "lwaftr config convert lwaftr.xml - --to snabb",
                                  "lwaftr config convert big.conf big.json --binding-table-file big.table"))
    p.add_argument("input", metavar="IN", help="configuration file (any supported format)")
    p.add_argument("output", metavar="OUT", help="file to write, or - for standard output")
    p.add_argument("--to", choices=sorted(TARGETS), help="target format (default: by OUT's suffix)")
    p.add_argument("--binding-table-file", metavar="FILE",
                   help="RFC 8676 targets: write the softwires to FILE (text binding-table format) "
                        "and name it in OUT instead of inline binding entries")
    p.set_defaults(func=run_convert)


def add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a configuration file",
                       description="Load a configuration with every check and print a summary.",
                       **examples("lwaftr config validate /etc/lwaftr/lwaftr.conf"))
    p.add_argument("file", metavar="FILE", help="configuration file (snabb-softwire-v3, or RFC 8676 XML/JSON)")
    p.set_defaults(func=run_validate)


#: subcommand -> function adding its parser (which sets ``func``)
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "convert": add_convert,
    "validate": add_validate,
    # A running instance's configuration (lwaftr.cli.config_live):
    "get": config_live.add_get,
    "set": config_live.add_set,
    "add": config_live.add_add,
    "remove": config_live.add_remove,
}


def _target(args: argparse.Namespace) -> str:
    if args.to:
        return args.to
    suffix = Path(args.output).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"cannot tell the target format from {args.output!r}: give --to")
    return _SUFFIXES[suffix]


def convert(src: str, out: str, to: str, binding_table_file: str | None = None) -> str:
    """The text of ``src`` converted to ``to`` (a TARGETS key), for writing to
    ``out``; writes ``binding_table_file`` when given.  ConfigError for a bad
    input, ValueError for what the target cannot express."""
    fmt = TARGETS[to]
    config = load_config(src)
    out_dir = Path(out).parent if out != "-" else Path.cwd()
    if fmt == ietf.SNABB:
        if binding_table_file is not None:
            raise ValueError("--binding-table-file applies to RFC 8676 targets only "
                             "(snabb-softwire-v3 has no binding-table file)")
        return dump_snabb(config)
    if binding_table_file is not None:
        ref = os.path.relpath(os.path.abspath(binding_table_file), os.path.abspath(out_dir))
        text = ietf.dumps_ietf(config, fmt, binding_table_file=ref)   # refuses before writing
        from lwaftr.bindingtable.textformat import dump_text
        dump_text(config.bindings, binding_table_file)
        return text
    ref = None
    if config.binding_table_file is not None:
        ref = os.path.relpath(os.path.abspath(config.binding_table_file), os.path.abspath(out_dir))
    return ietf.dumps_ietf(config, fmt, binding_table_file=ref)


def run_convert(args: argparse.Namespace) -> int:
    try:
        to = _target(args)
    except ValueError as e:
        print(f"{PROG} convert: {e}", file=sys.stderr)
        return 2
    try:
        text = convert(args.input, args.output, to, args.binding_table_file)
    except ConfigError as e:
        print(f"{PROG} convert: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{PROG} convert: {args.input} cannot be written as {to}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG} convert: {e}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    try:
        write_atomic(args.output, text.encode("utf-8"))
    except OSError as e:
        print(f"{PROG} convert: {args.output}: cannot write: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


def run_validate(args: argparse.Namespace) -> int:
    try:
        fmt = config_format(args.file)
        config = load_config(args.file)
    except ConfigError as e:
        print(f"{PROG} validate: {e}", file=sys.stderr)
        return 2
    table = f" (from {config.binding_table_file})" if config.binding_table_file else ""
    print(f"{args.file}: valid {_FORMAT_NAMES[fmt]} configuration: {len(config.bindings)} softwires{table}, "
          f"{len(config.instances)} instance queue(s)")
    return 0
