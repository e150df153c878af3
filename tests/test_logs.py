"""Log formats: text, JSON lines and syslog (to a socket the test listens on)."""
from __future__ import annotations

import json
import logging
import socket

from lwaftr import logs


def test_json_and_text_lines(capsys):
    logs.setup("info", "json")
    logging.getLogger("lwaftr.t").warning("alarm %s", "raised", extra={"fields": {"alarm": "x"}})
    line = json.loads(capsys.readouterr().err.strip())
    assert (line["level"], line["logger"], line["msg"], line["alarm"]) == ("WARNING", "lwaftr.t", "alarm raised", "x")
    logs.setup("warning", "text")
    logging.getLogger("lwaftr.t").info("hidden")
    logging.getLogger("lwaftr.t").error("shown", extra={"fields": {"k": 1}})
    err = capsys.readouterr().err
    assert "hidden" not in err and err.strip().endswith("ERROR lwaftr.t: shown k=1")


def test_syslog_handler_sends_rfc3164_datagrams(tmp_path):
    path = tmp_path / "log"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    try:
        logs.setup("info", "syslog", syslog_address=str(path))
        logging.getLogger("lwaftr.t").warning("next hop lost")
        data = server.recv(4096).decode()
    finally:
        logs.setup("info", "text")
        server.close()
    # <28>: facility daemon (3) * 8 + warning (4)
    assert data.startswith("<28>lwaftr[") and data.rstrip("\x00").endswith("WARNING lwaftr.t: next hop lost")
