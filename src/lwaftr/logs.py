"""Logging for the long-running commands: levels, and text or JSON lines.

Text: ``2026-11-29T06:40:00.123Z INFO lwaftr.live: message key=value``.
Syslog: the same through the local syslog socket (RFC 3164, facility daemon).
JSON: one object per line (``ts``, ``level``, ``logger``, ``msg`` and any
fields passed as ``extra={"fields": {...}}``), for log collectors.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time


def _ts(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = "".join(f" {k}={v}" for k, v in fields.items())
        line = f"{_ts(record)} {record.levelname} {record.name}: {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": _ts(record), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class SyslogFormatter(logging.Formatter):
    """RFC 3164 style for the local syslog daemon: ``lwaftr[PID]: LEVEL logger: msg k=v``
    (the handler adds the priority)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = "".join(f" {k}={v}" for k, v in fields.items())
        return f"lwaftr[{os.getpid()}]: {record.levelname} {record.name}: {record.getMessage()}{extra}"


def setup(level: str = "info", fmt: str = "text", syslog_address: str | None = None) -> None:
    """Log at ``level`` in ``fmt``: ``text`` or ``json`` lines on stderr, or ``syslog``
    (to ``syslog_address``, by default the local syslog socket, facility daemon;
    stderr in text if there is none)."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    if fmt == "syslog":
        address = syslog_address or next((a for a in ("/dev/log", "/var/run/syslog") if os.path.exists(a)), None)
        if address is not None:
            handler = logging.handlers.SysLogHandler(address=address,
                                                     facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            formatter = SyslogFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
