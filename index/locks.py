"""The single-writer lock of a collection directory (``writer.lock``, an advisory ``flock``)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from longvec.index.errors import CollectionLockedError


def take_writer_lock(root: Path) -> IO[str]:
    """Hold ``root``'s writer lock for as long as the returned file stays open (it records our pid)."""
    f = open(root / "writer.lock", "a+")  # noqa: SIM115 - held for the collection's lifetime
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CollectionLockedError(
            f"collection at {root} is open for writing in another process (pid in {root / 'writer.lock'}); "
            "if that is `longvec serve`, send the writes through it (`longvec index --server URL ...`, "
            "`longvec delete --server URL ...`, or POST /documents) or stop it first"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
