"""Choosing what a run looks at: `--kinds`, `--include`/`--exclude`, `.enrichignore` files, hidden files,
`--max-file-size`; and trial runs (`--sample N`, `--limit N`).

A file a filter leaves out gets **no row at all**: it is not an input item of the run. Discovery applies the
filters (tasks/discover.py): the path filters during the walk (a left-out folder is not even listed), the size
right after the file is opened, the kind right after sniffing (before hashing, so `--kinds image` never reads
a 4 GB video through). A file described by an earlier run and left out now keeps its earlier row: the
planner marks a path `gone` only when nothing is there any more (tasks/incremental.py), never because a
filter, a sample or a limit left it out.

Globs (`--include`, `--exclude`, `.enrichignore`) use gitignore syntax (the `pathspec` package): `*.png`
matches at any depth, `raw/` a folder and all under it, `/top.jpg` only beside the root (or the ignore
file), `2024/**/*.jpg` any depth between, `!keep.png` re-includes (in `.enrichignore`). `--include` and
`--exclude` are matched against the path relative to the root walked; an `.enrichignore` against the path
relative to its own folder, and a deeper file's rules win over an outer one's. As in git, nothing under a
left-out folder can be re-included. An `.enrichignore` without any pattern (empty, or comments only) leaves
its whole folder out, as it always did.

Trial runs choose among what the run would send (after the filters and after leaving out what is already
done): `--limit N` the first N in walk order, `--sample N` N drawn at random with `--seed`: each file's key is
a SHA-256 of the seed and its path relative to its root, and the N smallest keys win. The same seed draws the
same files, also after files were added elsewhere, and a later full run describes only the rest.
"""
from __future__ import annotations

import hashlib
import heapq
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from enrich.settings import parse_size, split_list

__all__ = ["IGNORE_MARKER", "IgnoreRules", "Selection", "trial_pick", "sample_key", "root_of"]

IGNORE_MARKER = ".enrichignore"
MAX_IGNORE_FILE_BYTES = 1 << 20


def _spec(lines: Iterable[str]):
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(list(lines))


def _patterns(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def load_ignore_file(folder: str) -> Any | None:
    """The rules of `folder`'s `.enrichignore` as a pathspec, or None when the file has no pattern (or cannot
    be read): then the whole folder is left out."""
    try:
        with open(os.path.join(folder, IGNORE_MARKER), "rb") as fh:
            text = fh.read(MAX_IGNORE_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    lines = _patterns(text)
    if not lines:
        return None
    return _spec(text.splitlines())


@dataclass(frozen=True)
class IgnoreRules:
    """The `.enrichignore` rules in force in one folder: (folder, spec) from the outermost to the deepest."""

    chain: tuple[tuple[str, Any], ...] = ()

    def plus(self, folder: str, spec: Any) -> "IgnoreRules":
        return IgnoreRules(self.chain + ((folder, spec),))

    def ignores(self, path: str, is_dir: bool) -> bool:
        ignored = False
        for folder, spec in self.chain:
            rel = path[len(folder) + 1:] if path.startswith(folder + os.sep) else None
            if rel is None:
                continue
            result = spec.check_file(rel + "/" if is_dir else rel)
            if result.include is not None:
                ignored = bool(result.include)
        return ignored


@dataclass(frozen=True)
class Selection:
    """Which files discovery reports. The defaults leave nothing out (but `.enrichignore` files are always
    obeyed); `from_settings` gives a run's choice, where hidden files are left out unless `hidden`."""

    kinds: frozenset[str] = frozenset()  # empty: every kind
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = True
    max_file_size: int | None = None
    _include_spec: Any = field(default=None, init=False, repr=False, compare=False)
    _exclude_spec: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include_spec", _spec(self.include) if self.include else None)
        object.__setattr__(self, "_exclude_spec", _spec(self.exclude) if self.exclude else None)

    @classmethod
    def from_settings(cls, settings: Any) -> "Selection":
        size = settings.max_file_size
        return cls(kinds=frozenset(split_list(settings.kinds)), include=tuple(split_list(settings.include)),
                   exclude=tuple(split_list(settings.exclude)), hidden=settings.hidden,
                   max_file_size=None if size in (None, "") else parse_size(size))

    @property
    def filters_paths(self) -> bool:
        return not self.hidden or self._include_spec is not None or self._exclude_spec is not None

    def keeps_path(self, name: str, rel: str, is_dir: bool) -> bool:
        """True when a walked entry (its name, its path relative to the root) passes the path filters."""
        if not self.hidden and name.startswith("."):
            return False
        if self._exclude_spec is not None and self._exclude_spec.match_file(rel + "/" if is_dir else rel):
            return False
        if not is_dir and self._include_spec is not None and not self._include_spec.match_file(rel):
            return False
        return True

    def keeps_size(self, size: int) -> bool:
        return self.max_file_size is None or size <= self.max_file_size

    def keeps_kind(self, kind: str | None) -> bool:
        return not self.kinds or kind in self.kinds


# -- trial runs -------------------------------------------------------------------------------------------------
def root_of(path: str, roots: Sequence[str]) -> str:
    """The root `path` was found under (the longest that contains it); '' when none does."""
    best = ""
    for root in roots:
        r = root.rstrip(os.sep)
        if (path == r or path.startswith(r + os.sep)) and len(r) > len(best):
            best = r
    return best


def sample_key(seed: int, path: str, roots: Sequence[str]) -> bytes:
    """The file's place in the draw: SHA-256 of the seed and the path relative to its root (so the same library
    mounted elsewhere draws the same files)."""
    root = root_of(path, roots)
    rel = path[len(root) + 1:] if root and path != root else os.path.basename(path)
    return hashlib.sha256(f"{seed}\0{rel}".encode("utf-8", "surrogateescape")).digest()


def trial_pick(items: Iterable[Any], path_of, *, roots: Sequence[str], limit: int | None = None,
               sample: int | None = None, seed: int = 0) -> Iterator[Any]:
    """The items a trial run keeps, in walk order: the first `limit`, or `sample` drawn by `seed`. Stops reading
    `items` once `limit` are taken (the rest of the walk is not done)."""
    if limit is not None and sample is None:
        taken = 0
        if limit <= 0:
            return
        for item in items:
            yield item
            taken += 1
            if taken >= limit:
                return
        return
    if sample is None:
        yield from items
        return
    heap: list[tuple[bytes, int, Any]] = []  # max-heap by key (negated bytes are not ordered): keep N smallest
    for n, item in enumerate(items):
        key = sample_key(seed, path_of(item), roots)
        neg = bytes(255 - b for b in key)
        if len(heap) < sample:
            heapq.heappush(heap, (neg, n, item))
        elif neg > heap[0][0]:
            heapq.heapreplace(heap, (neg, n, item))
    chosen = sorted(heap, key=lambda e: e[1])
    if limit is not None:
        chosen = chosen[:limit]
    for _, _, item in chosen:
        yield item
