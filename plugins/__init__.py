"""torrentcore's default plugins (installed as the ``torrentcore_plugins`` package).

Each module is registered through the ``torrentcore`` entry-point group, the
same way a third-party plugin is, and uses only :mod:`torrentcore.hookspec`.
"""
