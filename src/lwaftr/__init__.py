"""lwaftr: a Lightweight 4over6 AFTR (RFC 7596)."""
import hashlib as _hashlib
import os as _os


def _numba_cache_dir() -> str:
    """Where numba caches the compiled kernels: a directory named after a digest of
    the package's sources.  numba checks only the stamp of the file that defines a
    function, so a kernel cached before a change to a module it calls (icmperr.py
    under kernels.py, say) would otherwise be loaded stale after an edit or an
    upgrade.  Beside the sources, or where a user cannot write there (a root-owned
    install) a cache of that user's own, or under ``$NUMBA_CACHE_DIR`` if set."""
    root = _os.path.dirname(_os.path.abspath(__file__))
    h = _hashlib.sha256()
    for dirpath, dirs, files in _os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = _os.path.join(dirpath, name)
                h.update(_os.path.relpath(path, root).encode())
                with open(path, "rb") as fh:
                    h.update(fh.read())
    digest = h.hexdigest()[:16]
    base = _os.environ.get("NUMBA_CACHE_DIR")
    if base and _os.path.basename(base.rstrip("/")) == digest:
        return base                                   # set by this code in a parent process
    if not base:
        base = (_os.path.join(root, "__pycache__", "numba") if _os.access(root, _os.W_OK) else
                _os.path.join(_os.environ.get("XDG_CACHE_HOME") or _os.path.expanduser("~/.cache"),
                              "lwaftr", "numba"))
    return _os.path.join(base, digest)


_os.environ["NUMBA_CACHE_DIR"] = _numba_cache_dir()
