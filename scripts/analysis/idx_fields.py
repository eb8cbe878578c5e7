#!/usr/bin/env python3
"""Bytes per event of each field in the index pieces of at least MIN events (default 4096), for a data
directory (format v4, see crates/logbook-store/src/piece.rs). Needs `pip install zstandard`.
Usage: scripts/analysis/idx_fields.py DATA_DIR [MIN]"""
import sys, os, collections, zstandard as zs
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx_pieces import varint, pieces
def dec(data, raw):
    if len(data)==raw: return data
    return zs.ZstdDecompressor().decompress(data, max_output_size=raw)
PLAIN=['id','seq','type','action','actor.id','actor.type','actor.name','entity.type','entity.id','entity.name','outcome','description','created_at','received_at']
def table(b,i):
    n,i=varint(b,i); po,i=varint(b,i); pl,i=varint(b,i); co,i=varint(b,i); cl,i=varint(b,i); k,i=varint(b,i)
    dirb=0
    for _ in range(k):
        st=i; l,i=varint(b,i); i+=l; _,i=varint(b,i); _,i=varint(b,i); _,i=varint(b,i); dirb+=i-st
    return (n,pl,cl,dirb),i
sizes=collections.Counter(); terms=collections.Counter(); hashed=collections.Counter(); ev_total=0
minev=int(sys.argv[2]) if len(sys.argv)>2 else 4096
for b, entries in pieces(sys.argv[1]):
    for first, end, so, sl, raw, start, base in entries:
        if end-first<minev: continue
        ev_total+=end-first
        sec=dec(b[so+base:so+base+sl], raw)
        sizes['(section)']+=sl
        j=1; nu,j=varint(sec,j)
        assert nu==0
        (wn,wpl,wcl,wd),j=table(sec,j)
        sizes['(words)']+=wpl+wcl+wd; terms['(words)']+=wn
        nf,j=varint(sec,j)
        for _ in range(nf):
            tag=sec[j]; j+=1
            if tag>=14:
                kl,j=varint(sec,j); key=sec[j:j+kl].decode(); j+=kl
                fname={14:'resources.',15:'context.',16:'metadata.'}[tag]+key
            else: fname=PLAIN[tag]
            t,j=varint(sec,j); ln=t>>1
            if t&1:
                ro,j=varint(sec,j); rr,j=varint(sec,j)
                rec=dec(b[ro+base:ro+base+ln], rr); sizes[fname]+=ln
            else:
                rec=sec[j:j+ln]; j+=ln
            r=0; po,r=varint(rec,r); pl,r=varint(rec,r); sizes[fname]+=pl
            kind=rec[r]; r+=1
            if kind==0:
                (tn,tpl,tcl,td),r=table(rec,r)
            else:
                # a hashed table: entries, chunks span, chunks and their directory
                tn,r=varint(rec,r); _,r=varint(rec,r); tcl,r=varint(rec,r); k,r=varint(rec,r)
                for _ in range(3*k): _,r=varint(rec,r)
                tpl=0; hashed[fname]+=1
            (nn,npl,ncl,nd),r=table(rec,r)
            sizes[fname]+=tpl+tcl+npl+ncl; terms[fname]+=tn+nn
            for _ in range(3):
                o,r=varint(rec,r); l2,r=varint(rec,r); sizes[fname]+=l2
tot=sum(sizes.values())
print('events',ev_total,'bytes',tot,'B/event',tot/ev_total)
for k,v in sizes.most_common(25):
    print(f'{k:40s} {v/ev_total:6.2f} B/event  terms/event {terms[k]/ev_total:.3f}  hashed in {hashed[k]} pieces')
