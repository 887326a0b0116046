"""``python -m torrentcore`` and the ``torrentcore`` command (``entry``)."""

import gc
import sys


def entry() -> int:
    """Import the CLI and run it; Ctrl-C at any moment, even during the imports, is a quiet exit 130.

    The collector is off during start-up (the CLI turns it back on: ``run`` and ``seed`` once their torrents
    are added and the long-lived objects frozen, the other commands before they start): the imports make
    hundreds of thousands of objects and few cycles, and collecting them cost 70 gen-0 and 7 gen-1
    collections, 20-55 ms of CPU, in a 256 MiB ``run`` here (10 gen-0 collections, 1-2 ms, after it).
    """
    gc.disable()
    try:
        from .cli import main  # the CLI module monkey-patches for gevent first thing

        return main()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(entry())
