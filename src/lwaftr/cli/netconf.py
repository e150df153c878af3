"""``lwaftr netconf --host-key FILE --users FILE [--listen ADDR:PORT] [--name NAME]``:
a NETCONF server over SSH for a running instance (:mod:`lwaftr.mgmt.netconf`).

``lwaftr netconf --hash-password`` prints the hash of a password (read from
the terminal, or one line of standard input) for the users file.
"""
from __future__ import annotations

import argparse
import sys

from lwaftr.cli import LOG_FORMAT_HELP, LOG_LEVEL_HELP, examples
from lwaftr import logs

DEFAULT_LISTEN = "127.0.0.1:830"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("netconf", help="serve NETCONF over SSH for a running instance",
                       **examples("lwaftr netconf --hash-password            # a hash for the users file",
                                  "lwaftr netconf --users /etc/lwaftr/users --host-key /etc/lwaftr/ssh_host_key "
                                  "--name lwaftr"))
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"address to listen on (default {DEFAULT_LISTEN}; [::1]:PORT for IPv6)")
    p.add_argument("--name", help="instance name (default: the only one running)")
    p.add_argument("--host-key", metavar="FILE", help="SSH host key (an Ed25519 key is made if missing)")
    p.add_argument("--users", metavar="FILE",
                   help="users file: USER:PASSWORD-HASH or USER:SSH-PUBLIC-KEY lines")
    p.add_argument("--hash-password", action="store_true",
                   help="print the hash of a password for the users file, and exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help=LOG_LEVEL_HELP)
    p.add_argument("--log-format", default="text", choices=["text", "json", "syslog"], help=LOG_FORMAT_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.hash_password:
        from lwaftr.mgmt.netconf_auth import hash_password
        if sys.stdin.isatty():
            import getpass
            pw = getpass.getpass("password: ")
            if getpass.getpass("again: ") != pw:
                print("lwaftr netconf: the passwords differ", file=sys.stderr)
                return 2
        else:
            pw = sys.stdin.readline().rstrip("\r\n")
        if not pw:
            print("lwaftr netconf: empty password", file=sys.stderr)
            return 2
        print(hash_password(pw))
        return 0
    if not args.host_key or not args.users:
        print("lwaftr netconf: --host-key and --users are required", file=sys.stderr)
        return 2
    logs.setup(args.log_level, args.log_format)
    if args.log_level != "debug":
        import logging
        logging.getLogger("asyncssh").setLevel(logging.WARNING)      # a line per connection step
    from lwaftr.mgmt import netconf
    try:
        return netconf.serve(args.listen, args.name, args.host_key, args.users)
    except (ValueError, OSError) as e:
        print(f"lwaftr netconf: {e}", file=sys.stderr)
        return 1
