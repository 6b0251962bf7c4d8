#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run online, before scripts/gpu-check.sh goes to an offline GPU machine: downloads the Debian
# packages the build needs but such a machine may lack (doctest, Eigen; both header-only) into
# .deb/ (git-ignored). gpu-check.sh unpacks them with `dpkg -x` when they are not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(doctest-dev libeigen3-dev)
mkdir -p .deb
# Keep .deb/ out of git also in a checkout whose .gitignore lacks it.
# (A worktree's .git is a file: ask git where the exclude file is.)
if exclude=$(git rev-parse --git-path info/exclude 2>/dev/null); then
  mkdir -p "$(dirname "$exclude")"
  grep -qsx '/.deb/' "$exclude" || echo '/.deb/' >>"$exclude"
fi

cd .deb
if ! apt-get download "${packages[@]}"; then
  echo "fetch-debs.sh: 'apt-get download' failed; the package lists may be stale: run 'apt-get update' (as root)" >&2
  exit 1
fi
echo "fetch-debs.sh: in $(pwd):"
ls -l ./*.deb
