"""The ``torrentcore`` sub-commands, one module each: :mod:`.info`, :mod:`.run`, :mod:`.seed`, :mod:`.create`,
:mod:`.plugins` (``daemon`` is :mod:`torrentcore.daemon.command`).

:mod:`torrentcore.cli` parses the command line and imports only the chosen command's module, so that a
command pays at start-up only for the modules it uses. Each ``cmd_*`` takes the parsed options and returns
the exit code; bad input raises :class:`~torrentcore.errors.BadInputError` (the CLI prints one line).
Shared by several commands: :mod:`.sources` (reading the torrents named on the command line) and
:mod:`.text` (sizes and hashes as the commands print them).
"""
