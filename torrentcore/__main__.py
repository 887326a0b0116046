"""``python -m torrentcore`` and the ``torrentcore`` command (``entry``)."""

import sys


def entry() -> int:
    """Import the CLI and run it; Ctrl-C at any moment, even during the imports, is a quiet exit 130."""
    try:
        from .cli import main  # the CLI module monkey-patches for gevent first thing

        return main()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(entry())
