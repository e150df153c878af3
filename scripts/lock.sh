#!/usr/bin/env bash
# Refresh requirements.lock: every distribution the project and its tests
# install (and the build tools of the one source distribution, libyang),
# pinned with their hashes by pip-tools.  Run it after changing dependencies
# in pyproject.toml (or to take newer releases), then run `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check pip-tools==7.7.0
"$tmp/venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras --extra test \
  --all-build-deps --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
echo "requirements.lock: $(grep -c '^[a-z]' requirements.lock) distributions"
