"""``lwaftr`` command line: one module per subcommand under ``lwaftr.cli``."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module (each exposes add_parser(subparsers) and run(args) -> int)
COMMANDS = {
    "bench": "lwaftr.cli.bench",
    "check": "lwaftr.cli.check",
    "compile-configuration": "lwaftr.cli.compile_configuration",
    "config": "lwaftr.cli.config",
    "counters": "lwaftr.cli.counters",
    "demo": "lwaftr.cli.demo",
    "generate-configuration": "lwaftr.cli.generate_configuration",
    "metrics": "lwaftr.cli.metrics",
    "monitor": "lwaftr.cli.monitor",
    "netconf": "lwaftr.cli.netconf",
    "query": "lwaftr.cli.query",
    "reload": "lwaftr.cli.reload",
    "run": "lwaftr.cli.run",
    "top": "lwaftr.cli.top",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lwaftr", description="Lightweight 4over6 AFTR (RFC 7596).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, mod in COMMANDS.items():
        importlib.import_module(mod).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
