"""Which boot of the machine this is: what tells whether data written without ``fsync`` can have been lost.

Bytes handed to the kernel by ``pwrite`` are in its page cache: every reader sees them at once, whatever
happens to the process that wrote them, and the kernel writes them to the disk within about half a minute
(``vm.dirty_expire_centisecs``). Only a crash of the kernel or a power cut before that loses them, and either
means a new boot. So a resume record that names the boot it was written in (:func:`boot_id`) can vouch for
data that was not ``fsync``-ed yet, as long as the machine has not started again since; after a new boot the
pieces of those files are hashed before they are trusted (``plugins/filesystem.py``).

Linux gives every boot a random id (``/proc/sys/kernel/random/boot_id``; a container sees its host's, whose
page cache it shares). Where there is none, :func:`boot_id` is ``None`` and the storage ``fsync``-s every
file at close before it writes its record, as before.
"""

from __future__ import annotations

import functools

#: Where Linux gives the id of the current boot (a UUID, new at every start of the kernel).
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@functools.cache
def boot_id() -> str | None:
    """The id of the running boot, or ``None`` where the system gives none (then data is synced at close)."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            value = f.read(64).strip()
    except (OSError, ValueError):
        return None
    return value if 8 <= len(value) <= 40 else None
