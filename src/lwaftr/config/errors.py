"""The one exception configuration loaders raise."""
from __future__ import annotations


class ConfigError(Exception):
    """A configuration file is malformed or inconsistent.

    ``file``: the source name; ``line``: 1-based line, or None when no line
    applies (e.g. a missing top-level container); ``path``: the schema path of
    the offending node, like ``softwire-config/binding-table/softwire/psid``
    (empty for pure syntax errors).  ``str()`` gives ``FILE:LINE: PATH: message``.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = path

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def __reduce__(self):  # keep keyword-only fields when pickled (multiprocessing)
        return (_rebuild, (self.message, self.file, self.line, self.path))


def _rebuild(message: str, file: str | None, line: int | None, path: str) -> ConfigError:
    return ConfigError(message, file=file, line=line, path=path)
