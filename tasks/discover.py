"""Find the files to process: walk roots, sniff content, hash bytes; one row per file.

Every regular file under a root ends in exactly one `DiscoveredFile`:

- ``pending``: media (image/audio/video/document) to process; `kind`/`mime` come from the content.
- ``skipped``: not media (`not_media`), a companion file beside the media (`companion`: XMP and other
  sidecars, `.aae`, `.thm`, `.lrv`, catalogues, `.DS_Store`; recognised by name, see tasks/sniff.py), or a
  symlink whose target leaves the root (`outside_root`).
- ``error``: a bad input, with `error_kind` and a plain-words `error`:
  `empty`, `mislabelled`, `unreadable`, `broken_link`, `symlink_loop`, `bad_filename`, `not_found`.

Nothing here raises for a bad file or directory: the scan goes on and the problem becomes a row.

Walk rules: iterative `os.scandir`, entries sorted by name; directories named `.git` or `__pycache__`
are left out silently. What a `Selection` (tasks/selection.py) leaves out gets no row at all: `.enrichignore`
rules (always obeyed; one without patterns leaves its whole folder out), hidden names, include/exclude globs
(in the walk), files above a size (once opened), other kinds (once sniffed, before hashing). Symlinks are never followed out
of their root. Real directories are walked first; directory symlinks inside the root are followed
afterwards and only to directories not seen yet (by (st_dev, st_ino)), so no file is reported twice
through a link and link loops end as a `symlink_loop` row.

Sniffing and hashing run in a thread pool with a bounded lookahead, in walk order. With a `hash_cache`
(tasks/hash_cache.py) a file whose (path, size, mtime_ns) is cached is sniffed but not read through again.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, TypeVar

from enrich.schemas.vocab import ErrorKind, Status
from enrich.tasks.sniff import (
    EXTENSION_MIMES,
    SNIFF_BYTES,
    TEXT_DOCUMENT_EXTENSIONS,
    companion_of,
    describe_mime,
    kind_of_mime,
    sniff,
    refine_tiff,
    sniff_with_decoder,
)
from enrich.tasks.selection import IGNORE_MARKER, IgnoreRules, Selection, load_ignore_file

__all__ = [
    "DiscoveredFile",
    "count_files",
    "discover",
    "hash_file",
    "iter_batches",
    "SKIP_DIR_NAMES",
    "IGNORE_MARKER",
    "ERROR_KINDS",
]

SKIP_DIR_NAMES = frozenset({".git", "__pycache__"})
ALL = Selection()  # nothing left out but what .enrichignore files say
HASH_BLOCK = 1 << 20
PROBE_CHUNK = 8  # files per thread-pool task

ERROR_KINDS = frozenset(
    {
        ErrorKind.EMPTY,
        ErrorKind.MISLABELLED,
        ErrorKind.UNREADABLE,
        ErrorKind.BROKEN_LINK,
        ErrorKind.SYMLINK_LOOP,
        ErrorKind.BAD_FILENAME,
        ErrorKind.NOT_FOUND,
        # kinds of `skipped` rows
        ErrorKind.NOT_MEDIA,
        ErrorKind.COMPANION,
        ErrorKind.OUTSIDE_ROOT,
    }
)

# Indirection so tests can simulate permission errors (they run as root, where chmod does not bite).
_scandir = os.scandir
_open_fd = os.open

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DiscoveredFile:
    path: str  # absolute path as walked (not symlink-resolved)
    size: int
    mtime_ns: int
    kind: str | None  # image/audio/video/document, or None for non-media
    mime: str | None
    content_hash: str | None  # hex sha256 of the bytes; None when not hashed / unreadable
    status: Status  # PENDING, SKIPPED or ERROR
    error_kind: str | None
    error: str | None
    inode: int | None = field(default=None, compare=False)  # of the file read: still the one hashed?
    profile: str | None = None  # the profile a row for this file is for (a run asks each profile separately)


def hash_file(path: str | os.PathLike[str], block: int = HASH_BLOCK) -> str:
    """Hex sha256 of a file, streamed in `block`-sized reads (hashlib drops the GIL on big updates)."""
    h = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def iter_batches(it: Iterable[_T], n: int) -> Iterator[list[_T]]:
    """Yield lists of `n` items (the last one may be shorter)."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    iterator = iter(it)
    while batch := list(islice(iterator, n)):
        yield batch


# --------------------------------------------------------------------------------------------------
# rows


def _row(
    path: str,
    status: str,
    error_kind: str | None = None,
    error: str | None = None,
    *,
    size: int = 0,
    mtime_ns: int = 0,
    kind: str | None = None,
    mime: str | None = None,
    content_hash: str | None = None,
    inode: int | None = None,
) -> DiscoveredFile:
    return DiscoveredFile(
        path=path,
        size=size,
        mtime_ns=mtime_ns,
        kind=kind,
        mime=mime,
        content_hash=content_hash,
        status=status,
        error_kind=error_kind,
        error=error,
        inode=inode,
    )


def _lstat_fields(path: str) -> dict[str, int]:
    try:
        st = os.lstat(path)
    except OSError:
        return {}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _printable_path(path: str) -> str:
    """`path` with undecodable bytes (surrogate escapes) shown as U+FFFD, safe to store as UTF-8."""
    return os.fsencode(path).decode("utf-8", "replace")


def _has_bad_name(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _oserror_text(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


def _rel(path: str, base: str) -> str:
    rel = os.path.relpath(path, base)
    return _printable_path(rel)


# --------------------------------------------------------------------------------------------------
# probing one file: open, sniff, classify, hash (runs in the thread pool)


def _probe(path: str, hash_files: bool, cache=None, sel: Selection = ALL) -> DiscoveredFile | None:
    """The file's row; None when the selection leaves it out (too large, another kind)."""
    try:
        row = _probe_file(path, hash_files, cache, sel)
        if row is not None and sel.kinds and row.status != Status.PENDING and not _claimed_kind_kept(row, sel):
            return None
        return row
    except Exception as exc:  # a bug or an exotic filesystem error must not end the scan
        return _row(
            _printable_path(path),
            Status.ERROR,
            ErrorKind.UNREADABLE,
            f"could not examine file: {exc.__class__.__name__}: {exc}",
            **_lstat_fields(path),
        )


def _claimed_kind_kept(row: DiscoveredFile, sel: Selection) -> bool:
    """With --kinds, a file that is not pending media keeps its row only when its name claims a chosen kind
    (`broken.jpg` under `--kinds image`); not-media and companion files have no kind."""
    if row.status == Status.SKIPPED:
        return False
    claimed = EXTENSION_MIMES.get(os.path.splitext(row.path)[1].lower())
    return claimed is not None and sel.keeps_kind(kind_of_mime(claimed))


def _probe_file(path: str, hash_files: bool, cache=None, sel: Selection = ALL) -> DiscoveredFile | None:
    name = os.path.basename(path)
    if _has_bad_name(path):
        return _row(
            _printable_path(path),
            Status.ERROR,
            ErrorKind.BAD_FILENAME,
            f"file name is not valid UTF-8: {_printable_path(name)!r}; rename the file",
            **_lstat_fields(path),
        )
    try:
        # O_NONBLOCK: opening a FIFO that replaced the file after the walk must not hang the scan.
        fd = _open_fd(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        return _row(path, Status.ERROR, ErrorKind.UNREADABLE, "cannot read file: permission denied", **_lstat_fields(path))
    except FileNotFoundError:
        return _row(path, Status.ERROR, ErrorKind.UNREADABLE, "file disappeared during the scan", **_lstat_fields(path))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _row(path, Status.ERROR, ErrorKind.SYMLINK_LOOP, f"symlink loop: {name} cannot be resolved", **_lstat_fields(path))
        return _row(path, Status.ERROR, ErrorKind.UNREADABLE, f"cannot open file: {_oserror_text(exc)}", **_lstat_fields(path))

    with open(fd, "rb", buffering=0, closefd=True) as f:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return _row(
                    path,
                    Status.SKIPPED,
                    ErrorKind.NOT_MEDIA,
                    f"not a regular file ({_special_kind(st.st_mode)})",
                    mtime_ns=st.st_mtime_ns,
                )
            fields = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
            if not sel.keeps_size(st.st_size):
                return None
            companion = companion_of(name)
            if companion is not None:
                return _row(path, Status.SKIPPED, ErrorKind.COMPANION, f"companion file: {companion}", **fields)
            ext = os.path.splitext(name)[1].lower()
            claimed = EXTENSION_MIMES.get(ext)
            if st.st_size == 0:
                if claimed is None:
                    # A zero-byte `.gitkeep` or lock file is not a broken media file.
                    return _row(path, Status.SKIPPED, ErrorKind.EMPTY, "empty file (0 bytes), not media", **fields)
                return _row(path, Status.ERROR, ErrorKind.EMPTY, "empty file (0 bytes)", **fields)

            head = _read_head(f, SNIFF_BYTES)
            if not head:  # shrank to nothing since fstat
                return _row(path, Status.ERROR, ErrorKind.EMPTY, "empty file (0 bytes)", **fields)
            sniffed = sniff(head, ext)
            if sniffed is None and ext:
                sniffed = sniff_with_decoder(path, ext)  # image formats without a magic number
            outcome = _classify(name, ext, claimed, sniffed)
            if outcome is not None:
                status, error_kind, error = outcome
                return _row(path, status, error_kind, error, **fields)

            kind, mime = sniffed  # type: ignore[misc]
            if not sel.keeps_kind(kind):
                return None
            mime = refine_tiff(path, mime)
            digest = None
            if hash_files:
                digest = cache.get(path, st.st_size, st.st_mtime_ns) if cache is not None else None
                if digest is None:
                    digest = _hash_rest(f, head, st.st_size)
                    if cache is not None:
                        cache.put(path, st.st_size, st.st_mtime_ns, digest)
            return _row(path, Status.PENDING, kind=kind, mime=mime, content_hash=digest, **fields)
        except OSError as exc:
            return _row(path, Status.ERROR, ErrorKind.UNREADABLE, f"read error: {_oserror_text(exc)}", **_lstat_fields(path))


def _read_head(f, n: int) -> bytes:
    chunks = []
    remaining = n
    while remaining > 0:
        chunk = f.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


_local = threading.local()


def _hash_rest(f, head: bytes, size: int) -> str:
    """sha256 of `head` plus the rest of `f`, reusing one read buffer per thread."""
    h = hashlib.sha256(head)
    if size <= len(head):
        tail = f.read()  # usually b"": the head was the whole file
        if tail:
            h.update(tail)
        return h.hexdigest()
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
    return h.hexdigest()


def _classify(
    name: str, ext: str, claimed: str | None, sniffed: tuple[str, str] | None
) -> tuple[str, str, str] | None:
    """(status, error_kind, error) for a file that is not pending media, or None when it is."""
    shown_ext = ext or "(no extension)"
    if sniffed is None:
        if claimed is not None:
            return (
                Status.ERROR,
                ErrorKind.MISLABELLED,
                f"named {shown_ext} but content is not {describe_mime(claimed)} "
                "(unrecognised or corrupt data)",
            )
        return Status.SKIPPED, ErrorKind.NOT_MEDIA, "not a media file (unrecognised content)"
    kind, mime = sniffed
    if kind == "document" and mime.startswith("text/"):
        if ext in TEXT_DOCUMENT_EXTENSIONS:
            return None
        if claimed is not None:  # a .png/.pdf/.mp3 that holds text
            return Status.ERROR, ErrorKind.MISLABELLED, f"named {shown_ext} but content is {describe_mime(mime)}"
        # Text under other names (.json/.xmp sidecars, code, logs) is not a document to describe.
        return Status.SKIPPED, ErrorKind.NOT_MEDIA, f"text file with extension {shown_ext} is not a document type"
    # Real media content: accepted with the sniffed mime, whatever the name claims.
    return None


# --------------------------------------------------------------------------------------------------
# walking


class _Probe:
    """A file found by the walk that still needs opening/sniffing/hashing."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def _within(target: str, root_real: str) -> bool:
    if target == root_real:
        return True
    prefix = root_real if root_real.endswith(os.sep) else root_real + os.sep
    return target.startswith(prefix)


def folder_ids(paths: Iterable[str | os.PathLike[str]]) -> frozenset[tuple[int, int]]:
    """(st_dev, st_ino) of the folders among `paths` that exist (for `discover(skip=...)`)."""
    ids = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            ids.add((st.st_dev, st.st_ino))
    return frozenset(ids)


def _walk_root(root: str | os.PathLike[str], sel: Selection = ALL, skip: frozenset[tuple[int, int]] = frozenset()
               ) -> Iterator[DiscoveredFile | _Probe]:
    root_abs = os.path.abspath(os.fspath(root))
    try:
        st = os.stat(root_abs)
    except FileNotFoundError:
        if os.path.islink(root_abs):
            yield _row(root_abs, Status.ERROR, ErrorKind.BROKEN_LINK, f"broken symlink: {root_abs} -> {os.readlink(root_abs)}")
        else:
            yield _row(root_abs, Status.ERROR, ErrorKind.NOT_FOUND, f"no such file or directory: {root_abs}")
        return
    except PermissionError as exc:
        yield _row(root_abs, Status.ERROR, ErrorKind.UNREADABLE, f"cannot access: {_oserror_text(exc)}")
        return
    except OSError as exc:
        kind = "symlink_loop" if exc.errno == errno.ELOOP else "unreadable"
        what = "symlink loop" if kind == "symlink_loop" else _oserror_text(exc)
        yield _row(root_abs, Status.ERROR, kind, f"{what}: {root_abs}")
        return

    if stat.S_ISREG(st.st_mode):
        yield _Probe(root_abs)
        return
    if not stat.S_ISDIR(st.st_mode):
        yield _row(root_abs, Status.SKIPPED, ErrorKind.NOT_MEDIA, f"not a regular file ({_special_kind(st.st_mode)})")
        return

    root_real = os.path.realpath(root_abs)
    # folders never walked, silently: enrich's own state (its home, warehouse, caches, temp copies)
    visited: set[tuple[int, int]] = set(skip)
    # Directories to list: (walked path, (st_dev, st_ino), the .enrichignore rules in force there).
    stack: list[tuple[str, tuple[int, int], IgnoreRules]] = [(root_abs, (st.st_dev, st.st_ino), IgnoreRules())]
    # Directory symlinks inside the root, followed after the real tree: (link path, target real path, rules).
    deferred: deque[tuple[str, str, IgnoreRules]] = deque()

    while stack or deferred:
        if not stack:
            link_path, target_real, link_rules = deferred.popleft()
            try:
                tst = os.stat(link_path)
            except OSError as exc:  # changed since we saw it
                yield _row(link_path, Status.ERROR, ErrorKind.BROKEN_LINK, f"broken symlink: {_oserror_text(exc)}")
                continue
            key = (tst.st_dev, tst.st_ino)
            if key in skip:
                continue  # a link to enrich's own state: left out silently, like the folder itself
            if key in visited:
                rel_link = _rel(link_path, root_abs)
                rel_target = _rel(target_real, root_real)
                link_dir_real = os.path.realpath(os.path.dirname(link_path))
                if _within(link_dir_real, target_real):
                    msg = f"symlink loop: {rel_link} -> {rel_target}"
                else:
                    msg = f"symlink loop: {rel_link} -> {rel_target} (directory already scanned)"
                yield _row(link_path, Status.ERROR, ErrorKind.SYMLINK_LOOP, msg, **_lstat_fields(link_path))
                continue
            stack.append((link_path, key, link_rules))
            continue

        dir_path, key, rules = stack.pop()
        if key in visited:
            continue
        visited.add(key)
        try:
            with _scandir(dir_path) as it:
                entries = list(it)
        except PermissionError:
            yield _row(
                _printable_path(dir_path),
                Status.ERROR,
                ErrorKind.UNREADABLE,
                "cannot list directory: permission denied",
                **_lstat_fields(dir_path),
            )
            continue
        except OSError as exc:
            yield _row(
                _printable_path(dir_path),
                Status.ERROR,
                ErrorKind.UNREADABLE,
                f"cannot list directory: {_oserror_text(exc)}",
                **_lstat_fields(dir_path),
            )
            continue

        if any(e.name == IGNORE_MARKER for e in entries):
            spec = load_ignore_file(dir_path)
            if spec is None:  # no pattern: the whole folder is left out
                continue
            rules = rules.plus(dir_path, spec)
        entries.sort(key=lambda e: e.name)
        subdirs: list[tuple[str, tuple[int, int]]] = []
        dir_links: deque[tuple[str, str]] = deque()
        for entry in entries:
            if entry.name == IGNORE_MARKER or not _selected(entry, root_abs, rules, sel):
                continue
            yield from _visit_entry(entry, root_abs, root_real, subdirs, dir_links)
        deferred.extend((link, target, rules) for link, target in dir_links)
        stack.extend((path, k, rules) for path, k in reversed(subdirs))


def _selected(entry: os.DirEntry[str], root_abs: str, rules: IgnoreRules, sel: Selection) -> bool:
    """False when .enrichignore rules or the selection's path filters leave the entry out (no row)."""
    if not rules.chain and not sel.filters_paths:
        return True
    try:
        is_dir = entry.is_dir()
    except OSError:
        is_dir = False
    if rules.chain and rules.ignores(entry.path, is_dir):
        return False
    rel = entry.path[len(root_abs) + 1:] if entry.path.startswith(root_abs + os.sep) else entry.name
    return sel.keeps_path(entry.name, rel, is_dir)


def _visit_entry(
    entry: os.DirEntry[str],
    root_abs: str,
    root_real: str,
    subdirs: list[tuple[str, tuple[int, int]]],
    deferred: deque[tuple[str, str]],
) -> Iterator[DiscoveredFile | _Probe]:
    path = entry.path
    try:
        is_link = entry.is_symlink()
        if not is_link:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIP_DIR_NAMES:
                    est = entry.stat(follow_symlinks=False)
                    subdirs.append((path, (est.st_dev, est.st_ino)))
                return
            if entry.is_file(follow_symlinks=False):
                yield _Probe(path)
                return
            est = entry.stat(follow_symlinks=False)
            yield _row(
                _printable_path(path),
                Status.SKIPPED,
                ErrorKind.NOT_MEDIA,
                f"not a regular file ({_special_kind(est.st_mode)})",
                mtime_ns=est.st_mtime_ns,
            )
            return
    except OSError as exc:
        yield _row(_printable_path(path), Status.ERROR, ErrorKind.UNREADABLE, f"cannot stat: {_oserror_text(exc)}", **_lstat_fields(path))
        return

    # A symlink: never follow it out of the root.
    shown = _printable_path(path)
    rel_link = _rel(path, root_abs)
    try:
        link_text = _printable_path(os.readlink(path))
    except OSError:
        link_text = "?"
    target_real = os.path.realpath(path)
    fields = _lstat_fields(path)
    if not _within(target_real, root_real):
        yield _row(
            shown,
            Status.SKIPPED,
            ErrorKind.OUTSIDE_ROOT,
            f"symlink points outside the scanned folder: {rel_link} -> {link_text}",
            **fields,
        )
        return
    try:
        tst = os.stat(path)
    except FileNotFoundError:
        yield _row(shown, Status.ERROR, ErrorKind.BROKEN_LINK, f"broken symlink: {rel_link} -> {link_text} (target missing)", **fields)
        return
    except PermissionError as exc:
        yield _row(shown, Status.ERROR, ErrorKind.UNREADABLE, f"cannot follow symlink {rel_link}: {_oserror_text(exc)}", **fields)
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            yield _row(shown, Status.ERROR, ErrorKind.SYMLINK_LOOP, f"symlink loop: {rel_link} -> {link_text}", **fields)
        else:
            yield _row(shown, Status.ERROR, ErrorKind.UNREADABLE, f"cannot follow symlink {rel_link}: {_oserror_text(exc)}", **fields)
        return

    if stat.S_ISDIR(tst.st_mode):
        if os.path.basename(target_real) not in SKIP_DIR_NAMES and entry.name not in SKIP_DIR_NAMES:
            deferred.append((path, target_real))
        return
    if stat.S_ISREG(tst.st_mode):
        yield _Probe(path)
        return
    yield _row(shown, Status.SKIPPED, ErrorKind.NOT_MEDIA, f"symlink to a {_special_kind(tst.st_mode)}, not a regular file", **fields)


def _walk(roots: Sequence[str | Path], sel: Selection = ALL, skip: frozenset[tuple[int, int]] = frozenset()
          ) -> Iterator[DiscoveredFile | _Probe]:
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    for root in roots:
        yield from _walk_root(root, sel, skip)


# --------------------------------------------------------------------------------------------------
# public entry point


def discover(
    roots: Sequence[str | Path], *, hash_files: bool = True, workers: int = 8, hash_cache=None,
    selection: Selection | None = None,
    skip: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[DiscoveredFile]:
    """Walk `roots` and yield one `DiscoveredFile` per file, in walk order (sorted by name), leaving out what
    `selection` (and .enrichignore files) leave out.

    `skip`: folders left out silently wherever they appear under a root (compared by device and inode, so
    another path to the same folder is skipped too): enrich passes its own state (tasks/discover.py
    `own_state_dirs`), so `enrich run ~` does not index its warehouse, caches or temporary copies.

    Sniffing/hashing run on `workers` threads with a bounded lookahead, so memory stays flat for
    any number of files. Closing the iterator early stops the pool.
    """
    sel = selection or ALL
    walk = _walk(roots, sel, folder_ids(skip))
    if workers <= 1:
        for item in walk:
            row = _probe(item.path, hash_files, hash_cache, sel) if isinstance(item, _Probe) else item
            if row is not None:
                yield row
        return

    # Probes go to the pool in small chunks (a future per file costs more than sniffing a small
    # one); at most `lookahead` chunks are in flight, so memory stays flat.
    lookahead = max(4 * workers, 16)
    pending: deque[Future[list[DiscoveredFile]] | list[DiscoveredFile]] = deque()
    chunk: list[str] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich-discover")

    def flush() -> None:
        if chunk:
            pending.append(pool.submit(_probe_many, list(chunk), hash_files, hash_cache, sel))
            chunk.clear()

    try:
        for item in walk:
            if isinstance(item, _Probe):
                chunk.append(item.path)
                if len(chunk) >= PROBE_CHUNK:
                    flush()
            else:
                flush()
                pending.append([item])
            while len(pending) >= lookahead:
                yield from _result(pending.popleft())
        flush()
        while pending:
            yield from _result(pending.popleft())
    finally:
        for fut in pending:
            if isinstance(fut, Future):
                fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def count_files(roots: Sequence[str | Path], selection: Selection | None = None,
                skip: Iterable[str | os.PathLike[str]] = ()) -> int:
    """How many rows `discover(roots)` will yield, from the walk alone (no opening, sniffing or hashing):
    cheap enough to run beside a discovery to give progress a total (an upper bound when the selection
    leaves out sizes or kinds)."""
    return sum(1 for _ in _walk(roots, selection or ALL, folder_ids(skip)))


def own_state_dirs(home: str | os.PathLike[str], warehouse: str | os.PathLike[str],
                   extra: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """The folders holding enrich's own state, never to be described: ENRICH_HOME (caches, Prefect's home
    by default), the warehouse, Prefect's home wherever PREFECT_HOME puts it, and the temporary copies of
    stripped media ($TMPDIR/enrich-media-<uid>)."""
    import tempfile

    dirs = [os.fspath(home), os.fspath(warehouse)]
    tmp = tempfile.gettempdir()
    try:  # enrich-media-<uid>, or a private enrich-media-XXXX when that name was taken
        dirs += [os.path.join(tmp, name) for name in os.listdir(tmp) if name.startswith("enrich-media-")]
    except OSError:
        pass
    if os.environ.get("PREFECT_HOME"):
        dirs.append(os.path.expanduser(os.environ["PREFECT_HOME"]))
    dirs.extend(os.fspath(p) for p in extra)
    return dirs


def _probe_many(paths: list[str], hash_files: bool, cache=None, sel: Selection = ALL) -> list[DiscoveredFile]:
    return [row for p in paths if (row := _probe(p, hash_files, cache, sel)) is not None]


def _result(item: Future[list[DiscoveredFile]] | list[DiscoveredFile]) -> list[DiscoveredFile]:
    return item.result() if isinstance(item, Future) else item
