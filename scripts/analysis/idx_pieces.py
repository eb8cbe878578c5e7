#!/usr/bin/env python3
"""Index files by piece size: pieces, events, bytes per event, for a data directory (formats v3 and v4, see
crates/logbook-store/src/piece.rs). Usage: scripts/analysis/idx_pieces.py DATA_DIR"""
import sys, struct, glob, collections


def varint(b, i):
    v = 0; s = 0
    while True:
        x = b[i]; i += 1; v |= (x & 0x7f) << s; s += 7
        if x < 0x80: return v, i


def pieces(data_dir):
    """Yields (file bytes, or None for a file that is not whole, and per piece of it: first, end, section
    offset, section length, section length decompressed, start, base)."""
    for f in sorted(glob.glob(data_dir + '/blocks/*.idx')):
        b = open(f, 'rb').read()
        if len(b) < 48 or b[-8:] != b'LOGBOOKI':
            print('skip', f, len(b))
            continue
        doff, dlen = struct.unpack('<QQ', b[-28:-12])
        d = b[doff:doff + dlen]; i = 0
        n, i = varint(d, i)
        entries = []
        for _ in range(n):
            l, i = varint(d, i); i += l
            first, i = varint(d, i); end, i = varint(d, i); i += 16
            so, i = varint(d, i); sl, i = varint(d, i); raw, i = varint(d, i); i += 1
            start, i = varint(d, i); z, i = varint(d, i)
            entries.append((first, end, so, sl, raw, start, (z >> 1) ^ -(z & 1)))
        yield b, entries


if __name__ == '__main__':
    tot_bytes = 0; tot_events = 0; pieces_n = 0; files = 0
    buckets = collections.defaultdict(lambda: [0, 0, 0])
    for b, entries in pieces(sys.argv[1]):
        files += 1
        for first, end, so, sl, raw, start, base in entries:
            size = so + base + sl - start
            ev = end - first; pieces_n += 1
            k = 1
            while k < ev: k *= 4
            bk = buckets[k]; bk[0] += 1; bk[1] += ev; bk[2] += size
            tot_events += ev
        tot_bytes += len(b)
    print(files, 'files', pieces_n, 'pieces', tot_bytes, 'bytes', tot_events, 'events', tot_bytes / tot_events, 'B/event')
    for k in sorted(buckets):
        p, e, s = buckets[k]
        print(f'events<={k:>7}: pieces {p:>6} events {e:>9} bytes {s:>11} B/event {s/e:7.1f}  B/piece {s/p:8.0f}')
