"""A minimal libtorrent downloader, run as its own process by ``benchmarks/swarm.py``.

    python benchmarks/lt_leecher.py FILE.torrent OUT_DIR [--port P]

It imports nothing but libtorrent (so its CPU time and peak RSS are libtorrent's, not a test
harness's), finds peers through the torrent's tracker, and exits once every piece is verified *and*
written (``flush_cache`` then the ``cache_flushed_alert``). It prints one JSON line:
``{"done_at": <time.time() when complete and flushed>}``; exit code 0, or 1 on an error or timeout.
Settings are those of ``tests/realpeers.py`` for a loopback-only session.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import libtorrent as lt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("torrent")
    ap.add_argument("out")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--rc4", action="store_true", help="MSE/PE forced, RC4 only (pe_forced, pe_rc4)")
    ap.add_argument("--utp", action="store_true", help="uTP only (BEP 29): TCP disabled both ways")
    ap.add_argument("--max-peers", type=int, default=0, help="connections_limit (0: libtorrent's default)")
    ap.add_argument("--peer", action="append", default=[], metavar="HOST:PORT", help="connect to this peer too")
    args = ap.parse_args()
    mask = lt.alert.category_t.error_notification | lt.alert.category_t.status_notification \
        | lt.alert.category_t.storage_notification
    ses = lt.session({
        "listen_interfaces": f"127.0.0.1:{args.port}",
        "outgoing_interfaces": "127.0.0.1",
        "allow_multiple_connections_per_ip": True,  # every peer is 127.0.0.1
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": args.utp, "enable_incoming_utp": args.utp,
        "enable_outgoing_tcp": not args.utp, "enable_incoming_tcp": not args.utp,
        "out_enc_policy": int(lt.enc_policy.pe_forced if args.rc4 else lt.enc_policy.pe_disabled),
        **({"in_enc_policy": int(lt.enc_policy.pe_forced), "allowed_enc_level": int(lt.enc_level.rc4)}
           if args.rc4 else {}),
        "ssrf_mitigation": False,
        "stop_tracker_timeout": 1,
        "unchoke_slots_limit": -1,
        "alert_mask": int(mask),
        **({"connections_limit": args.max_peers} if args.max_peers else {}),
    })
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.out
    params.flags &= ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
    h = ses.add_torrent(params)
    for peer in args.peer:
        host, _, port = peer.rpartition(":")
        h.connect_peer((host, int(port)))
    deadline = time.monotonic() + args.timeout
    finished = flushed = False
    while time.monotonic() < deadline and not flushed:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            kind = type(a).__name__
            if kind in ("torrent_error_alert", "file_error_alert"):
                print(json.dumps({"error": a.message()}), flush=True)
                return 1
            if kind == "torrent_finished_alert" and not finished:
                finished = True
                h.flush_cache()
            elif kind == "cache_flushed_alert" and finished:
                flushed = True
        if not finished and h.status().is_seeding:
            finished = True
            h.flush_cache()
    if not flushed:
        print(json.dumps({"error": "timed out", "progress": h.status().progress}), flush=True)
        return 1
    print(json.dumps({"done_at": time.time()}), flush=True)
    ses.pause()
    del ses
    return 0


if __name__ == "__main__":
    sys.exit(main())
