"""Who may use the NETCONF server: a users file of password hashes and SSH public keys.

One entry a line, ``#`` starts a comment::

    admin:$scrypt$ln=15,r=8,p=1$<salt>$<hash>     a password (hashlib.scrypt; base64 without padding)
    admin:$2b$12$...                                a password (bcrypt, when the bcrypt package is installed)
    admin:ssh-ed25519 AAAAC3Nza... admin@laptop     an authorized public key (any type asyncssh knows)
    viewer:group read-only                          the user's access group (NACM, RFC 8341, a subset)

A user may have several lines (a password and keys).  Access groups:
``read-write`` (every operation; a user without a group line is in it) and
``read-only`` (reads only: ``get``, ``get-config``, ``get-schema``,
``validate``, ``close-session``; anything that changes a datastore, locks
or ends another session is refused with ``access-denied``).  ``lwaftr netconf
--hash-password`` prints the hash of a password read from the terminal or
standard input.  The file is read again when it changes, so users can be
added or removed without restarting the server.  No anonymous access: a user
who is not in the file, a wrong password or an unknown key gets nothing.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

#: scrypt cost: N = 2^15, r = 8, p = 1 (32 MiB, about 0.1 s)
SCRYPT_LN, SCRYPT_R, SCRYPT_P = 15, 8, 1


def asyncssh_module():
    """asyncssh, imported once without its import-time deprecation warnings.

    asyncssh still names DSA key types, and cryptography >= 51 warns about
    DSA when they are merely referenced: one warning per reference, written
    to the server's log at import, about keys this server never offers.
    """
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DSA is deprecated")
        import asyncssh
    return asyncssh


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int, dklen: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r + (1 << 20))


def hash_password(password: str, *, ln: int = SCRYPT_LN) -> str:
    """``$scrypt$ln=..,r=..,p=..$salt$hash`` of ``password``."""
    salt = os.urandom(16)
    dk = _scrypt(password.encode(), salt, ln, SCRYPT_R, SCRYPT_P, 32)
    return f"$scrypt$ln={ln},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed`` (scrypt, or bcrypt if installed); False for
    anything unreadable."""
    try:
        if hashed.startswith("$scrypt$"):
            _, _, params, salt, dk = hashed.split("$")
            kv = dict(p.split("=", 1) for p in params.split(","))
            ln, r, p = int(kv["ln"]), int(kv["r"]), int(kv["p"])
            if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
                return False
            want = _unb64(dk)
            return hmac.compare_digest(_scrypt(password.encode(), _unb64(salt), ln, r, p, len(want)), want)
        if hashed.startswith(("$2a$", "$2b$", "$2y$")):
            import bcrypt
            return bcrypt.checkpw(password.encode(), hashed.encode())
    except (ValueError, KeyError, ImportError, TypeError):
        return False
    return False


#: a hash to check wrong user names against, so they take as long as wrong passwords
_DUMMY = hash_password("not a password")


READ_ONLY, READ_WRITE = "read-only", "read-write"
GROUPS = (READ_ONLY, READ_WRITE)


@dataclass
class User:
    passwords: list[str] = field(default_factory=list)
    keys: list[object] = field(default_factory=list)      # asyncssh SSHKey (public)
    group: str = READ_WRITE


class UsersFile:
    """The users file, read again whenever its modification time or size changes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        self.users()            # errors in the file are reported at start

    def users(self) -> dict[str, User]:
        with self._lock:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._users = parse_users(self.path.read_text(), str(self.path))
                self._stamp = stamp
            return self._users

    def has_passwords(self, username: str) -> bool:
        u = self.users().get(username)
        return u is not None and bool(u.passwords)

    def check_password(self, username: str, password: str) -> bool:
        u = self.users().get(username)
        if u is None or not u.passwords:
            verify_password(password, _DUMMY)
            return False
        ok = False
        for h in u.passwords:
            ok = verify_password(password, h) or ok
        return ok

    def group(self, username: str) -> str:
        """The user's access group (read-only for a user no longer in the file)."""
        u = self.users().get(username)
        return u.group if u is not None else READ_ONLY

    def check_key(self, username: str, key) -> bool:
        u = self.users().get(username)
        if u is None:
            return False
        data = key.public_data
        return any(k.public_data == data for k in u.keys)


def parse_users(text: str, source: str = "<users>") -> dict[str, User]:
    """``{username: User}`` from a users file; ValueError naming the line for a bad one."""
    asyncssh = asyncssh_module()
    users: dict[str, User] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"{source}:{n}: expected 'USER:PASSWORD-HASH' or 'USER:SSH-PUBLIC-KEY'")
        u = users.setdefault(name, User())
        if value.startswith("group ") or value == "group":
            group = value[len("group"):].strip()
            if group not in GROUPS:
                raise ValueError(f"{source}:{n}: unknown group {group!r} (one of {', '.join(GROUPS)})")
            u.group = group
            continue
        if value.startswith("$"):
            if not value.startswith(("$scrypt$", "$2a$", "$2b$", "$2y$")):
                raise ValueError(f"{source}:{n}: unknown password hash (use lwaftr netconf --hash-password)")
            u.passwords.append(value)
        else:
            try:
                u.keys.append(asyncssh.import_public_key(value))
            except (asyncssh.KeyImportError, ValueError) as e:
                raise ValueError(f"{source}:{n}: not a public key: {e}") from None
    return users
