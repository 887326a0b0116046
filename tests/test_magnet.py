"""Magnet URIs (BEP 9): parsing only."""

from __future__ import annotations

import base64

import pytest

from torrentcore.errors import MetainfoError
from torrentcore.magnet import is_magnet, parse_magnet

HEX = "08ada5a7a6183aae1e09d831df6748d566095a10"


def test_hex_and_base32_info_hashes():
    b32 = base64.b32encode(bytes.fromhex(HEX)).decode()
    assert parse_magnet(f"magnet:?xt=urn:btih:{HEX}").info_hash_hex == HEX
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32}").info_hash_hex == HEX
    assert parse_magnet(f"magnet:?xt=urn:btih:{HEX.upper()}").info_hash_hex == HEX


def test_name_trackers_peers_length():
    m = parse_magnet(
        f"magnet:?xt=urn:btih:{HEX}&dn=Sintel%20movie&tr=udp%3A%2F%2Fa.example%3A1&tr=http%3A%2F%2Fb.example%2Fann"
        "&tr=udp%3A%2F%2Fa.example%3A1&x.pe=127.0.0.1:6881&x.pe=[::1]:6882&x.pe=bad&xl=1234"
    )
    assert m.name == "Sintel movie"
    assert m.trackers == [["udp://a.example:1"], ["http://b.example/ann"]]
    assert m.peers == [("127.0.0.1", 6881), ("::1", 6882)]
    assert m.exact_length == 1234


@pytest.mark.parametrize(
    "uri,message",
    [
        ("magnet:?dn=x", "no 'xt=urn:btih:'"),
        ("magnet:?xt=urn:btih:1234", "invalid info-hash"),
        ("magnet:?xt=urn:btih:" + "z" * 40, "invalid info-hash"),
        ("magnet:?xt=urn:btmh:1220" + "ab" * 31, "invalid v2 info-hash"),
        ("magnet:?xt=urn:btmh:1114" + "ab" * 32, "invalid v2 info-hash"),
        ("http://example.com/", "not a magnet link"),
    ],
)
def test_refused(uri, message):
    with pytest.raises(MetainfoError, match=message):
        parse_magnet(uri)


def test_is_magnet():
    assert is_magnet("MAGNET:?xt=urn:btih:" + HEX)
    assert not is_magnet("file.torrent")


def test_web_seeds_ws_http_only_once_each_bounded():
    """BEP 19 ``ws=``: http/https kept (once each, in order), anything else dropped, at most MAX_WEB_SEEDS."""
    from urllib.parse import quote

    from torrentcore.magnet import MAX_WEB_SEEDS

    seeds = ["http://m/a/", "HTTPS://m/b.iso", "ftp://m/c", "javascript:alert(1)", "file:///etc/passwd",
             "http://m/a/", "http://m/with space", "http://" + "x" * 3000]
    link = f"magnet:?xt=urn:btih:{HEX}" + "".join(f"&ws={quote(u, safe='')}" for u in seeds)
    assert parse_magnet(link).web_seeds == ["http://m/a/", "HTTPS://m/b.iso"]
    many = f"magnet:?xt=urn:btih:{HEX}" + "".join(f"&ws=http://m/{n}" for n in range(100))
    assert parse_magnet(many).web_seeds == [f"http://m/{n}" for n in range(MAX_WEB_SEEDS)]
    assert parse_magnet(f"magnet:?xt=urn:btih:{HEX}").web_seeds == []
