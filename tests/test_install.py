"""The installation is the locked one: every distribution in requirements.lock
is installed at its locked version, and the lock covers what pyproject.toml asks."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(n): v for n, v in pins}


def test_lock_has_hashes_for_every_pin():
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", text, flags=re.M)[1:]
    assert len(blocks) == len(_locked()) >= 25
    for b in blocks:
        assert "--hash=sha256:" in b, b.splitlines()[0]


def test_installed_versions_are_the_locked_ones():
    wrong = {}
    for name, version in _locked().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"locked vs installed: {wrong} (make setup, or scripts/lock.sh after changing pyproject.toml)"


def test_lock_covers_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    for r in wanted:
        name = canonicalize_name(r.name)
        assert name in locked, f"{r} is not in requirements.lock: run scripts/lock.sh"
        assert r.specifier.contains(locked[name], prereleases=True), f"{r}: locked {locked[name]}"


def test_lock_holds_everything_the_dependencies_pull_in():
    """Every distribution the project and its tests need (as installed here, transitively)
    is locked: a new dependency cannot slip in unpinned, in setup or in the image."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        assert name in locked, f"{req.name} (needed by a dependency) is not in requirements.lock"
        for r in map(Requirement, metadata.distribution(req.name).requires or []):
            if not r.marker or r.marker.evaluate({"extra": ""}):
                todo.append(r)
    assert len(seen) >= 20
