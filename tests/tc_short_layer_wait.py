"""A ``--plugin`` module for tests: a download complete on SHA-1 waits two seconds for missing piece layers.

``torrentcore run --plugin tc_short_layer_wait`` (with this folder on ``PYTHONPATH``) lowers
:data:`torrentcore.layer_recheck.LAYER_WAIT` from 45 s, so a test can watch the wait run out.
"""

from torrentcore import layer_recheck

layer_recheck.LAYER_WAIT = 2.0
