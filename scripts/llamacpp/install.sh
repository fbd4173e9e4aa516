#!/bin/sh
# Install node-llama-cpp (pinned in package-lock.json) into DIR for
# tests/test_gguf.c:   scripts/llamacpp/install.sh [DIR]   (default build/llamacpp-node)
#
# Only the prebuilt CPU build of llama.cpp for linux-x64 comes along
# (@node-llama-cpp/linux-x64, a direct dependency); the other platforms'
# optional packages are left out, and no install script runs, so llama.cpp is
# never downloaded or compiled. check.mjs is copied beside node_modules.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-build/llamacpp-node}
mkdir -p "$dir"
if ! [ -f "$dir/node_modules/@node-llama-cpp/linux-x64/package.json" ] || ! cmp -s "$here/package-lock.json" "$dir/.installed-lock"; then
  command -v npm >/dev/null 2>&1 || { echo "install.sh: npm not found" >&2; exit 1; }
  echo "installing node-llama-cpp into $dir" >&2
  cp "$here/package.json" "$here/package-lock.json" "$dir/"
  # npm install, not npm ci: npm ci insists on lock entries for every other
  # platform's optional package, which are left out here on purpose
  (cd "$dir" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=optional --ignore-scripts --no-audit --no-fund \
     --loglevel=error)
  cp "$here/package-lock.json" "$dir/.installed-lock"
fi
cp "$here/check.mjs" "$dir/"
