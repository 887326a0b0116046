"""``python -m torrentcore``: the same as the ``torrentcore`` command."""

import sys

from .cli import main  # the CLI module monkey-patches for gevent first thing

sys.exit(main())
