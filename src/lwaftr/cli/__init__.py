"""The ``lwaftr`` subcommands, one module each (``add_parser(subparsers)`` and ``run(args)``)."""
from __future__ import annotations

import argparse
from typing import Any

LOG_LEVEL_HELP = "least severe log messages shown (default info)"
LOG_FORMAT_HELP = "log lines as plain text, one JSON object each, or to the local syslog (default text)"


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped as usual; an ``examples:`` epilog kept line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def examples(*lines: str) -> dict[str, Any]:
    """``add_parser`` keywords for a help that ends with these example command lines."""
    return {"epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines), "formatter_class": HelpFormatter}
