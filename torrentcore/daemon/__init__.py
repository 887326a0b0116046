"""``torrentcore daemon``: a long-running client with Transmission-compatible remote control.

One :class:`~torrentcore.Session` runs every torrent; their state lives in a SQLite database
(:mod:`.database`) in the config folder, which one daemon at a time may use (:mod:`.lock`). The
Transmission RPC (:mod:`.rpc`, fields in :mod:`.fields`) is served over HTTP by :mod:`.server`
(gevent.pywsgi) with the session-id handshake, Basic auth, a Host check and a client whitelist;
:mod:`.queue` decides which torrents run, :mod:`.watchdir` adds dropped files, :mod:`.app` ties them.
"""
