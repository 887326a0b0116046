"""A ``--plugin`` module for tests: lowers the engine's mid-message timeout to one second.

``torrentcore run --plugin tc_short_message_timeout`` (with this folder on ``PYTHONPATH``) then drops a peer
that stops in the middle of a message after one second instead of thirty, so a test can watch it happen.
"""

from torrentcore.peer import connection

connection.MESSAGE_TIMEOUT = 1.0
