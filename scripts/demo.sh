#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), builds a Debian root with python3, and
# runs examples/hello.ts: a VM that prints from a shell and from Python.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
scripts/setup.sh
image=$(scripts/rootfs-debian-python.sh)
node dist/examples/hello.js "$image"
