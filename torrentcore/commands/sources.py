"""The torrents named on the command line: a .torrent file read (and checked) or a magnet link checked,
before anything starts (``info``, ``run``, ``seed``)."""

from __future__ import annotations


def load_torrent(path: str):
    """The :class:`~torrentcore.metainfo.Metainfo` of a .torrent file; a magnet link here is bad input."""
    from .. import metainfo
    from ..errors import MetainfoError
    from ..magnet import is_magnet, parse_magnet

    if is_magnet(path):
        parse_magnet(path)  # a malformed link is reported as one (exit 2)
        raise MetainfoError("'seed' needs a .torrent file to check the data against; 'torrentcore run MAGNET' "
                            "saves NAME.torrent in its download folder")
    return metainfo.load(path)


def check_magnet(link: str) -> str:
    """``link`` itself, once parsed: a malformed link is bad input (exit 2) before anything starts."""
    from ..magnet import parse_magnet

    parse_magnet(link)
    return link
