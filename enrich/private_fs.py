"""Creating enrich's state private to its user: folders 0700, files 0600.

Warehouse parts hold GPS positions, camera serials and document summaries; caches hold every path of the
library; Prefect's home holds run parameters and logs. So whatever enrich creates under ENRICH_HOME, the
warehouse or $TMPDIR is created readable by its owner only, whatever the umask.

Existing folders: a folder the user names (ENRICH_HOME, the warehouse, their parents) keeps the mode it has:
someone who made a warehouse readable to a group did it on purpose. enrich's own subfolders (results/,
runs/, .tmp/, cache/, prefect/), which only enrich creates and writes, are tightened to 0700 when found open
to others (`own_state_dir`): earlier versions created them 0755, and their contents never were the user's
choice. No file is chmod-ed: a private folder already keeps others out.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dirs(path: str | os.PathLike[str]) -> Path:
    """`path` and its missing parents, each created 0700 (existing ones are left as they are)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode is cut by the umask; the umask never widens it
    return path


def own_state_dir(path: str | os.PathLike[str]) -> Path:
    """One of enrich's own state folders: created 0700, or tightened to 0700 if open to others."""
    path = private_dirs(path)
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o077 and (not hasattr(os, "getuid") or st.st_uid == os.getuid()):
            os.chmod(path, DIR_MODE)
    except OSError:
        pass  # not ours to change: the write that follows says why if it matters
    return path


def open_private(path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """os.open with mode 0600 for a new file."""
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)


def create_private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure `path` exists, created 0600 (an existing file is left as it is)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    os.close(fd)
    return Path(path)
