#!/bin/sh
# Print the entries of requirements.lock (pins with their hashes) for the
# distributions named as arguments: the build tools that must be installed
# before the lock's one source distribution (libyang) is built without an
# isolated, unpinned build environment.  Used by setup.sh and the Dockerfile.
set -eu
lock=${LOCK:-"$(dirname "$0")/../requirements.lock"}
awk -v want=" $* " '
  /^[A-Za-z0-9]/ { split($1, nv, "=="); keep = index(want, " " nv[1] " ") > 0 }
  keep && (/^[A-Za-z0-9]/ || /^ +--hash/)' "$lock"
