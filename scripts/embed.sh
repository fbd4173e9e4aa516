#!/bin/sh
# embed.sh NAME FILE: FILE as a C byte array `const char NAME[]` (NUL-terminated)
# and `const unsigned NAME_len`, on stdout. od + sed only (no xxd needed).
set -eu
name=$1 file=$2
echo "/* generated from $file by scripts/embed.sh */"
echo "const char $name[] = {"
od -An -v -tx1 "$file" | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'
echo "0x00};"
echo "const unsigned ${name}_len = sizeof $name - 1;"
