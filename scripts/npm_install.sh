#!/bin/sh
# npm_install.sh SRC DEST: install the packages pinned in SRC/package.json +
# SRC/package-lock.json into DEST (a build folder) and copy SRC/*.mjs beside
# them. Reinstalls only when the lock changed. Optional dependencies (other
# platforms' binaries) are left out and no install script runs, so nothing is
# downloaded or compiled beyond the npm packages themselves.
set -eu
src=$(cd "$1" && pwd)
dir=$2
mkdir -p "$dir"
if ! [ -d "$dir/node_modules" ] || ! cmp -s "$src/package-lock.json" "$dir/.installed-lock"; then
  command -v npm >/dev/null 2>&1 || { echo "npm_install.sh: npm not found" >&2; exit 1; }
  echo "installing $(sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' "$src/package.json" | head -1) into $dir" >&2
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  # npm install, not npm ci: npm ci insists on lock entries for every other
  # platform's optional package, which are left out on purpose
  (cd "$dir" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true PUPPETEER_SKIP_DOWNLOAD=1 \
     npm install --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp "$src/package-lock.json" "$dir/.installed-lock"
fi
cp "$src"/*.mjs "$dir/"
