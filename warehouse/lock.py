"""One writer per warehouse: an exclusive fcntl lock on `<warehouse>/.lock`.

flock() locks belong to the open file and vanish when the process dies, even by SIGKILL, so a dead run
never leaves the warehouse locked and no stale-lock guessing is needed. The file's text (pid, what, since)
only feeds the message a second writer prints. Readers (`enrich query`, `enrich runs`) never take the lock:
part files are immutable and published by atomic rename.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from enrich.errors import WarehouseLocked
from enrich.private_fs import private_dirs

LOCK_NAME = ".lock"
# A reader's momentary probe (is_locked) must not make a starting run refuse: retry this long first.
PROBE_GRACE_S = 2.0
POLL_S = 0.1


# The warehouse's own error (enrich/errors.py, a low module); the CLI maps it to exit code 2.
WarehouseBusy = WarehouseLocked


class WarehouseChanged(RuntimeError):
    """The locked warehouse is not the folder at its path any more (deleted, moved or replaced mid-run)."""

    kind = "warehouse_changed"


def lock_path(root: str | Path) -> Path:
    return Path(root) / LOCK_NAME


def holder_text(root: str | Path) -> str:
    """What the lock file says about its holder ('pid 123 on host, enrich run, since ...'), or ''."""
    try:
        return lock_path(root).read_text().strip()
    except OSError:
        return ""


class WarehouseLock:
    """`with WarehouseLock(root, "enrich run").acquire(): ...` — raises WarehouseBusy when held elsewhere."""

    def __init__(self, root: str | Path, purpose: str = "enrich run") -> None:
        self.root = Path(root)
        self.purpose = purpose
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool | float = False) -> "WarehouseLock":
        """Take the lock. wait=False: refuse (after a short grace) if another process holds it;
        wait=True: wait as long as it takes; wait=<seconds>: wait at most that long."""
        if self._fd is not None:
            return self
        private_dirs(self.root)
        fd = os.open(lock_path(self.root), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        limit = PROBE_GRACE_S if wait is False else (None if wait is True else float(wait))
        deadline = None if limit is None else time.monotonic() + limit
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise WarehouseBusy(self._busy_message(wait)) from None
                if wait is not False and not told:
                    told = True
                    print(f"enrich: waiting for the warehouse {self.root} ({holder_text(self.root) or 'in use'})",
                          file=sys.stderr, flush=True)
                time.sleep(POLL_S)
        self._fd = fd
        st = os.fstat(fd)
        self._identity = (st.st_dev, st.st_ino)
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        text = f"pid {os.getpid()} on {socket.gethostname()}, {self.purpose}, since {since}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        return self

    def verify(self) -> None:
        """Raise WarehouseChanged unless the lock file at the warehouse's path is still the one we hold: a
        warehouse deleted or moved away mid-run must not be silently recreated (without its lock, so a second
        writer could start) by the next part written. Called before every commit."""
        if self._fd is None:
            return
        try:
            st = os.stat(lock_path(self.root))
            same = (st.st_dev, st.st_ino) == self._identity
        except OSError:
            same = False
        if not same:
            raise WarehouseChanged(
                f"the warehouse {self.root} was deleted, moved or replaced while this run was writing to it; "
                "stopped instead of writing into a new folder without its lock (what the run committed "
                "before went with the old folder)")

    def _busy_message(self, wait: bool | float) -> str:
        holder = holder_text(self.root) or "another process"
        hint = "wait for it to finish, or pass --wait to queue behind it"
        if wait not in (False, True):
            hint = f"gave up after waiting {wait} s"
        return f"the warehouse {self.root} is in use ({holder}); {hint}"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the text describes the holder: no holder, no text
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "WarehouseLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(root: str | Path) -> bool:
    """True while some process holds the warehouse lock. A shared, non-blocking probe: never waits and
    holds nothing afterwards (a writer starting at that instant retries for PROBE_GRACE_S)."""
    path = lock_path(root)
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return False


def refuse_if_locked(root: str | Path) -> None:
    """Fail fast (before minutes of start-up) when another writer holds the warehouse."""
    if is_locked(root):
        raise WarehouseBusy(WarehouseLock(root)._busy_message(False))
