"""Cost of one valid but costly HTTP tracker reply: about 4 MB holding about 2 million values.

    python benchmarks/tracker_reply.py               # before (decoder's general limit) and after (reply budget)
    python benchmarks/tracker_reply.py --json -

``parse_announce_reply`` runs in a fresh child process per mode, so each peak RSS is its own:

* ``general-limit``: ``max_tokens=bencode.MAX_TOKENS`` (2,000,000), what tracker replies were decoded with;
* ``reply-budget``: the default, ``MAX_REPLY_TOKENS`` (100,000): the reply is refused by the strict scan.

Reported: CPU seconds of the parse (``time.process_time``), the child's peak RSS (MB), and what it said.
The reply also says ``interval 1``: each announce it answers cost this much again before the interval
was raised to ``MIN_ANNOUNCE_INTERVAL``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import write_json

#: A valid reply of 4 MB: ``interval 1``, a peer list of 1.99 million empty lists (1,990,003 values).
VALUES = 1_990_000


def _child(mode: str) -> None:
    from torrentcore import bencode
    from torrentcore.errors import TrackerError
    from torrentcore.tracker.http import MAX_REPLY_TOKENS, parse_announce_reply

    body = b"d8:intervali1e5:peersl" + b"le" * VALUES + b"ee"
    tokens = bencode.MAX_TOKENS if mode == "general-limit" else MAX_REPLY_TOKENS
    start = time.process_time()
    try:
        resp = parse_announce_reply(body, "http://t/announce", max_tokens=tokens)
        outcome = f"parsed: interval {resp.interval}, {len(resp.peers)} peers"
    except TrackerError as exc:
        outcome = f"refused: {exc}"
    cpu = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "bytes": len(body), "cpu_s": round(cpu, 3), "peak_rss_mb": round(peak, 1),
                      "outcome": outcome}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-': stdout)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    results = []
    for mode in ("general-limit", "reply-budget"):
        out = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout)
        results.append(row)
        print(f"{mode:14} {row['bytes']:>9} bytes  cpu {row['cpu_s']:7.3f} s  peak RSS {row['peak_rss_mb']:7.1f} MB  "
              f"{row['outcome'][:90]}")
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
