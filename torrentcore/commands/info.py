"""``torrentcore info``: what a .torrent file or magnet link contains (text, or ``--json`` for machines)."""

from __future__ import annotations

import json
import sys
import time

from ..errors import EXIT_OK
from .sources import load_torrent
from .text import human


def cmd_info(args) -> int:
    """``torrentcore info``."""
    from ..magnet import is_magnet, parse_magnet

    if is_magnet(args.torrent):
        m = parse_magnet(args.torrent)
        sources = _peer_sources(m.trackers, None, m.peers)
        data = {"magnet": True, "info_hash": m.info_hash_hex,
                "info_hash_v2": None if m.info_hash_v2 is None else m.info_hash_v2.hex(),
                "name": m.name, "trackers": m.trackers, "web_seeds": m.web_seeds,
                "peers": sources["magnet_peers"], "peer_sources": sources}
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"name:       {m.name or '(unknown until metadata is fetched)'}")
            if m.info_hash_v2 is None or m.info_hash != m.info_hash_v2[:20]:
                print(f"info-hash:  {m.info_hash_hex}")
            if m.info_hash_v2 is not None:
                print(f"info-hash v2: {m.info_hash_v2.hex()}")
            for n, tier in enumerate(m.trackers):
                print(f"tracker:    tier {n}: {' '.join(tier)}")
            for url in m.web_seeds:
                print(f"web seed:   {url}")
            _write_peer_sources(sys.stdout, sources)
        return EXIT_OK
    meta = load_torrent(args.torrent)
    files = [{"index": i, "path": f.relpath, "length": f.length} for i, f in enumerate(meta.data_files)]
    data = {
        "name": meta.name,
        "info_hash": meta.info_hash_hex,
        "info_hash_v1": None if meta.v2_only else meta.info_hash_hex,
        "info_hash_v2": meta.info_hash_v2_hex,
        "meta_version": 2 if meta.v2 else 1,
        "missing_piece_layers": len(meta.missing_layers()),
        "total_size": meta.data_length,
        "piece_length": meta.piece_length,
        "pieces": meta.num_pieces,
        "private": meta.private,
        "hybrid_v1_v2": meta.hybrid,
        "files": files,
        "trackers": meta.trackers,
        "created_by": meta.created_by,
        "comment": meta.comment,
        "creation_date": meta.creation_date,
        "url_list": meta.url_list,
        "http_seeds": meta.http_seeds,
        "peer_sources": _peer_sources(meta.trackers, meta.private, []),
    }
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_OK
    out = sys.stdout
    out.write(f"name:         {meta.name}\n")
    if meta.hybrid:
        out.write(f"info-hash:    {meta.info_hash_hex}  (v1; hybrid v1/v2 torrent)\n")
        out.write(f"info-hash v2: {meta.info_hash_v2_hex}\n")
    elif meta.v2_only:
        out.write(f"info-hash v2: {meta.info_hash_v2_hex}  (v2-only torrent; {meta.info_hash_hex} on the wire)\n")
    else:
        out.write(f"info-hash:    {meta.info_hash_hex}\n")
    out.write(f"total size:   {human(meta.data_length)} ({meta.data_length} bytes)\n")
    out.write(f"pieces:       {meta.num_pieces} x {human(meta.piece_length)}\n")
    if meta.missing_layers():
        out.write(f"piece layers: missing for {len(meta.missing_layers())} file(s) (they are fetched from peers)\n")
    out.write(f"private:      {'yes' if meta.private else 'no'}\n")
    if meta.created_by:
        out.write(f"created by:   {meta.created_by}\n")
    if meta.creation_date is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(0, meta.creation_date)))
        out.write(f"created:      {stamp}\n")
    if meta.comment:
        out.write(f"comment:      {meta.comment}\n")
    if meta.trackers:
        for n, tier in enumerate(meta.trackers):
            out.write(f"tracker tier {n}: {' '.join(tier)}\n")
    else:
        out.write("trackers:     none (trackerless)\n")
    for url in meta.url_list:
        out.write(f"web seed:     {url}\n")
    for url in meta.http_seeds:
        out.write(f"web seed:     {url}  (BEP 17 httpseeds)\n")
    _write_peer_sources(out, data["peer_sources"])
    out.write(f"files ({len(files)}):\n")
    for f in files:
        out.write(f"  {f['index']:>4}  {human(f['length']):>10}  {f['path']}\n")
    return EXIT_OK


def _peer_sources(trackers: list[list[str]], private: bool | None, peers: list[tuple[str, int]]) -> dict:
    """Where peers of a torrent may come from: its trackers, DHT and PEX unless private (BEP 27), and the
    peers a magnet link names (``x.pe``). ``private`` is ``None`` for a magnet (unknown until metadata)."""
    from ..peer.connection import format_address

    allowed = "no: private torrent" if private else "allowed"
    if private is None:
        allowed = "allowed unless the metadata says private"
    return {
        "trackers": [url for tier in trackers for url in tier],
        "dht": allowed,
        "pex": allowed,
        "magnet_peers": [format_address(p) for p in peers],
    }


def _write_peer_sources(out, sources: dict) -> None:
    count = len(sources["trackers"])
    out.write("peer sources:\n")
    out.write(f"  trackers:   {f'{count} (listed above)' if count else 'none'}\n")
    out.write(f"  DHT:        {sources['dht']}\n")
    out.write(f"  PEX:        {sources['pex']}\n")
    if sources["magnet_peers"]:
        out.write(f"  x.pe peers: {' '.join(sources['magnet_peers'])}\n")
