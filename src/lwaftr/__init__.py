"""lwaftr: a Lightweight 4over6 AFTR (RFC 7596)."""
import os as _os

# numba caches compiled kernels beside the sources; where a user cannot write
# there (a root-owned install), use a cache of that user's own.
if "NUMBA_CACHE_DIR" not in _os.environ and not _os.access(_os.path.dirname(__file__), _os.W_OK):
    _os.environ["NUMBA_CACHE_DIR"] = _os.path.join(
        _os.environ.get("XDG_CACHE_HOME") or _os.path.expanduser("~/.cache"), "lwaftr", "numba")
