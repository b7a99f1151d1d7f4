"""The run dir's owner lock: an advisory POSIX lock a dead process leaves free, and the probe
(``lock_holder``, ``F_GETLK``) that never takes it.

Foundation layer: the standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentgeo.records.io import DISK_FULL, file_mode


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


_HELD: set[str] = set()  # lock files this process holds: closing any fd of one releases it
# struct flock (fcntl(2)) on Linux and the BSDs: l_type, l_whence, l_start, l_len, l_pid
FLOCK = "hhqqi4x"


def lock_holder(path: Path) -> int | None:
    """The pid of the live process holding ``exclusive_lock(path)`` (this process's own pid
    for a lock it holds), or None. Takes no lock, creates nothing: ``F_GETLK`` only reports."""
    path = Path(path)
    if str(path.resolve()) in _HELD:
        return os.getpid()  # opening it here would release our own lock when closed
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


@contextlib.contextmanager
def exclusive_lock(path: Path, blocking: bool = True, holder: dict[str, Any] | None = None
                   ) -> Iterator[None]:
    """An advisory POSIX lock (``fcntl.lockf``: also across NFS clients) on ``path`` for the
    block. The kernel drops it when the process dies, so a lock of a dead process is free.
    ``blocking=False`` raises LockHeld naming the holder (from the file's JSON) instead of
    waiting; ``holder`` is written into the file while held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            try:
                who = json.loads(text)
            except ValueError:
                who = {}
            raise LockHeld(f"pid {who.get('pid', '?')} on {who.get('host', '?')} "
                           f"(since {who.get('since', '?')})") from None
        if holder is not None:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder).encode(), 0)
            except OSError as error:  # the holder only names the owner: a full disk may skip it
                if error.errno not in DISK_FULL:
                    raise
        _HELD.add(str(path.resolve()))
        yield
    finally:
        _HELD.discard(str(path.resolve()))
        os.close(fd)  # closing releases the lock
