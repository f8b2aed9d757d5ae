"""Incremental runs: decide, per discovered file, whether it needs a model call, a copied row, or nothing.

Identity is the content hash plus the enrichment version (tasks/records.py `enrichment_version`). For each
file, in walk order (the main thread of the run, so decisions are deterministic):

- **unchanged** -> no row at all. The path's latest row is for the same bytes and is final: `ok` (at the
  current version, or at an older one unless `--reprocess stale`), or a failure that would fail the same
  way again (`blocked`, a bad file, invalid output...) at the current version unless `--reprocess failed`;
  or, for a file discovery already rejects (not media, empty, mislabelled...), the same outcome for the same
  size and mtime. The run writes nothing for it, so an unchanged library leaves `items` identical, and the
  file's one current outcome is still its earlier row. The run counts these as `unchanged`.
- **copy** -> a row copied from an `ok` row for the same bytes at another path (a moved/renamed file, or
  a copy of something described before): no model call, cost 0, `reused_from` = the source path.
- **duplicate** -> the same bytes already go to the model in this run: the file waits until the end of
  the run and then copies that outcome (cost 0). Each distinct content is sent at most once per run.
- **send** -> everything else: new or changed bytes, stale rows with `--reprocess stale`, failures to retry.
  Outcomes that say nothing about the bytes (interrupted, over budget, rate limited, server errors, the run
  aborted) are always retried, so a rerun picks up exactly where committed work ended.

- **pair** -> a camera RAW with a JPEG of the same stem in the same folder (`IMG_0001.CR2` beside
  `IMG_0001.JPG`) is one shot: the JPEG is described and the RAW's row copies its outcome (cost 0,
  `reused_from` = the JPEG's path). The RAW waits until the end of the walk, when the JPEG's fate is known:
  sent in this run (the RAW copies its row once committed), already described (copied now), or not
  described (a bad JPEG, not media): then the RAW is described itself, as it is when the JPEG's description
  fails. `PAIR_RAW_WITH_JPEG` (below) turns this off.

After the walk, paths under the scanned roots whose latest row is not `gone`, that were not seen and where no
file is any more get a `gone` row (a file still there that a filter left out keeps its row) (`error_kind` `moved` when their bytes were seen at another path, else `removed`): the `items`
view hides them, `results` keeps their history. Nothing is marked gone under a root or folder the walk
could not read (its error row says why), so an unplugged disk does not empty the library.
"""
from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from enrich.errors import ConfigError
from enrich.schemas.vocab import ErrorKind, MediaKind, Status, retried_next_run
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.sniff import EXTENSION_MIMES, RAW_MIMES
from enrich.tasks.records import mtime_of
from enrich.warehouse.state import Described, PathState, WarehouseState, epoch_us

REPROCESS_CHOICES = ("stale", "failed", "all")

# A RAW and a JPEG with the same stem in one folder are one shot: describe the JPEG, copy it to the RAW.
# Module-level for now; read when a Planner is created.
PAIR_RAW_WITH_JPEG = True
_RAW_EXTENSIONS = frozenset(ext for ext, mime in EXTENSION_MIMES.items() if mime in RAW_MIMES)
_JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe"})

# A root that yields nothing while the warehouse knows files under it, or that lost more than half of them
# (and at least this many), looks like an empty mount point, not a clean-up: nothing under it is marked gone
# unless the run is told (--allow-mass-removal).
MASS_REMOVAL_MIN = 10


@dataclass(frozen=True)
class WithheldRemoval:
    root: str
    missing: int  # known paths not found now (moved ones aside)
    known: int  # paths the warehouse knew under the root
    walked: int | None  # files found under the root in this walk (None: not counted)

    def message(self) -> str:
        found = "the folder yielded no files" if self.walked == 0 else f"{self.missing} of {self.known} known files are missing"
        return (f"{self.root}: {found} (an empty or unmounted folder?); nothing under it was marked gone. If "
                "they were really deleted, run again with --allow-mass-removal")


def parse_reprocess(values: Iterable[str] | None) -> frozenset[str]:
    chosen = set()
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip()
            if not part or part == "none":
                continue
            if part not in REPROCESS_CHOICES:
                raise ConfigError(f"--reprocess takes {', '.join(REPROCESS_CHOICES)}, not {part!r}")
            chosen.add(part)
    return frozenset(chosen)


@dataclass(frozen=True, slots=True)
class CopyFrom:
    run_id: str
    path: str
    pair: bool = False  # the RAW of a RAW+JPEG pair: copy only an `ok` row, else describe the RAW itself


def _under(path: str, roots: list[str]) -> bool:
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def _still_there(path: str) -> bool:
    """A regular file (or a symlink) is still at `path`: the walk did not report it because a filter
    (--include/--exclude, .enrichignore, hidden, --kinds, --max-file-size) left it out."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


@dataclass
class Planner:
    state: WarehouseState
    run_id: str
    version_of: Callable[[str | None, str | None], str | None]  # (kind, profile) -> current enrichment version
    reprocess: frozenset[str] = frozenset()
    roots: tuple[str, ...] = ()  # the run's roots, to count what the walk found under each
    allow_mass_removal: bool = False
    unchanged: int = 0
    withheld: list[WithheldRemoval] = field(default_factory=list)  # roots where nothing was marked gone
    _walked: dict[str, int] = field(default_factory=dict)
    # (path, profile) -> row to copy (set before its chunk). Everything below is per (path, profile): a file
    # has one current row per profile, and each profile is planned on its own.
    copies: dict[tuple[str, str | None], CopyFrom] = field(default_factory=dict)
    # What is held for the whole run grows with the library, so it is kept to what is needed: the paths the
    # warehouse knows (to find the gone ones) and, for bytes the warehouse knows, where they are now (moves).
    # paths seen this run that have a row (any profile) in the warehouse: a path is gone or not whatever the
    # profiles a run asks, so a run asking only `caption` never marks a file's `detailed` row gone
    _seen: set[str] = field(default_factory=set)
    _known_paths: frozenset[str] = field(init=False)
    _hash_seen_at: dict[str, str] = field(default_factory=dict)  # known content hash -> first path seen now
    _known_hashes: frozenset[str] = field(init=False)
    _leaders: dict[tuple[str, str | None], str] = field(default_factory=dict)  # (hash, profile) -> path sent
    # Leader paths whose chunk has not committed yet, and one condition for duplicates waiting on them. Only
    # what is in flight is held (an Event per leader cost ~1 KB per file sent, for the whole run).
    _uncommitted: set[tuple[str, str | None]] = field(default_factory=set)
    _committing: threading.Condition = field(default_factory=threading.Condition)
    _duplicates: list[DiscoveredFile] = field(default_factory=list)
    _unreadable_dirs: list[str] = field(default_factory=list)
    pair_raw_with_jpeg: bool = field(default_factory=lambda: PAIR_RAW_WITH_JPEG)
    _pairs: list[tuple[DiscoveredFile, str]] = field(default_factory=list)  # (RAW waiting, its JPEG's path)
    # (JPEG path, profile) -> its fate, for JPEGs with a RAW sibling: a RAW copies its JPEG's row of its profile
    _jpeg_fate: dict[tuple[str, str | None], tuple[str, str | None]] = field(default_factory=dict)
    _dir_stems: tuple[str, dict[str, list[str]]] | None = None  # the last folder's {stem: [extensions]}

    def __post_init__(self) -> None:
        self._known_hashes = frozenset(s.content_hash for s in self.state.by_path.values()
                                       if s.content_hash and s.status != Status.GONE)
        self._known_paths = frozenset(path for path, _ in self.state.by_path)

    # -- the walk ---------------------------------------------------------------------------------------
    def note_seen(self, path: str) -> None:
        """`path` exists but gets no row now (an open batch job holds its bytes): it is not gone."""
        if path in self._known_paths:
            self._seen.add(path)

    def admit(self, file: DiscoveredFile) -> bool:
        """True if `file` goes into a chunk now (a row to write); False if it needs no row or waits."""
        key = (file.path, file.profile)
        last = self.state.by_path.get(key)
        if file.path in self._known_paths:
            self._seen.add(file.path)
        for root in self.roots:
            if _under(file.path, [root]):
                self._walked[root] = self._walked.get(root, 0) + 1
        if file.status != Status.PENDING:
            if file.status == Status.ERROR and file.error_kind in (ErrorKind.UNREADABLE, ErrorKind.NOT_FOUND, ErrorKind.SYMLINK_LOOP,
                                                              ErrorKind.BROKEN_LINK):
                self._unreadable_dirs.append(file.path)  # maybe a folder: nothing under it is gone
            # Discovery re-examines these every run; a row is only worth writing when the outcome changed.
            if "all" not in self.reprocess and last is not None and self._same_rejection(file, last):
                self.unchanged += 1
                return False
            return True
        h = file.content_hash
        if h is None:
            return True  # not hashed: nothing to match on
        if h in self._known_hashes:
            self._hash_seen_at.setdefault(h, file.path)
        version = self.version_of(file.kind, file.profile)
        role, partner = self._pair_role(file)
        if "all" not in self.reprocess and last is not None and last.content_hash == h \
                and self._final(last, version):
            self.unchanged += 1
            if role == "jpeg" and last.status == Status.OK:
                self._jpeg_fate[key] = ("described", h)
            return False
        if role == "raw":  # waits for the walk to tell what became of its JPEG
            self._pairs.append((file, partner))
            return False
        if (h, file.profile) in self._leaders:  # the same bytes are already being sent in this run
            self.copies[key] = CopyFrom(self.run_id, self._leaders[(h, file.profile)])
            self._duplicates.append(file)
            if role == "jpeg":
                self._jpeg_fate[key] = ("run", self._leaders[(h, file.profile)])
            return False
        if "all" not in self.reprocess:
            source = self._described(h, file.profile, version)
            if source is not None:
                self.copies[key] = CopyFrom(source.run_id, source.path)
                if role == "jpeg":  # its copied row is written in its chunk: the RAW waits for that
                    self._jpeg_fate[key] = ("run", file.path)
                    with self._committing:
                        self._uncommitted.add(key)
                return True
        if file.kind is not None and version is not None:
            self._leaders[(h, file.profile)] = file.path
            with self._committing:
                self._uncommitted.add(key)
            if role == "jpeg":
                self._jpeg_fate[key] = ("run", file.path)
        return True

    # -- RAW+JPEG pairs ----------------------------------------------------------------------------------
    def _pair_role(self, file: DiscoveredFile) -> tuple[str | None, str | None]:
        """("raw", the JPEG's path) for a RAW with a JPEG sibling, ("jpeg", None) for a JPEG with a RAW
        sibling, else (None, None). One directory listing per folder (the walk goes folder by folder)."""
        if not self.pair_raw_with_jpeg or file.kind != MediaKind.IMAGE:
            return None, None
        folder, name = os.path.split(file.path)
        stem, ext = os.path.splitext(name)
        ext = ext.lower()
        if ext not in _RAW_EXTENSIONS and ext not in _JPEG_EXTENSIONS:
            return None, None
        if file.mime not in RAW_MIMES and file.mime != "image/jpeg":
            return None, None
        siblings = self._stems(folder).get(stem.lower(), ())
        if file.mime in RAW_MIMES:
            for other in siblings:
                if os.path.splitext(other)[1].lower() in _JPEG_EXTENSIONS:
                    return "raw", os.path.join(folder, other)
        elif any(os.path.splitext(other)[1].lower() in _RAW_EXTENSIONS for other in siblings):
            return "jpeg", None
        return None, None

    def _stems(self, folder: str) -> dict[str, list[str]]:
        if self._dir_stems is None or self._dir_stems[0] != folder:
            stems: dict[str, list[str]] = {}
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in _RAW_EXTENSIONS or ext.lower() in _JPEG_EXTENSIONS:
                    stems.setdefault(stem.lower(), []).append(name)
            self._dir_stems = (folder, stems)
        return self._dir_stems[1]

    def _paired_files(self) -> Iterator[DiscoveredFile]:
        """The RAWs of RAW+JPEG pairs, each planned as a copy of its JPEG's row where there will be one."""
        pairs, self._pairs = self._pairs, []
        for raw, jpeg in pairs:
            fate = self._jpeg_fate.get((jpeg, raw.profile))
            if fate is not None and fate[0] == "run":
                self.copies[(raw.path, raw.profile)] = CopyFrom(self.run_id, fate[1] or jpeg, pair=True)
            elif fate is not None and fate[0] == "described":
                done = self.state.ok_by_hash.get((fate[1] or "", raw.profile), {})
                source = next((d for d in done.values() if d.path == jpeg), None) or next(iter(done.values()), None)
                if source is not None:
                    self.copies[(raw.path, raw.profile)] = CopyFrom(source.run_id, source.path, pair=True)
            yield raw  # without a copy planned, the RAW is described itself
        self._jpeg_fate.clear()

    @staticmethod
    def _same_rejection(file: DiscoveredFile, last: PathState) -> bool:
        return (last.status, last.error_kind, last.error, last.size_bytes, last.mtime_us) == (
            file.status, file.error_kind, file.error, file.size, epoch_us(mtime_of(file.mtime_ns)))

    def _final(self, last: PathState, version: str | None) -> bool:
        if last.status == Status.OK:
            return last.version == version or "stale" not in self.reprocess
        if last.status == Status.GONE or retried_next_run(last.status, last.error_kind):
            return False
        if last.version != version:
            return False  # a skip or failure under another model/prompt/schema says nothing about this one
        return not ("failed" in self.reprocess and last.status in (Status.ERROR, Status.BLOCKED))

    def _described(self, h: str, profile: str | None, version: str | None) -> Described | None:
        done = self.state.ok_by_hash.get((h, profile))
        if not done:
            return None
        if version in done:
            return done[version]
        if "stale" in self.reprocess:
            return None
        return next(iter(done.values()))  # keep an older description rather than pay again

    # -- chunks ------------------------------------------------------------------------------------------
    def take_copy(self, file: DiscoveredFile) -> CopyFrom | None:
        return self.copies.pop((file.path, file.profile), None)

    def wait_for_leader(self, ref: CopyFrom, profile: str | None = None) -> None:
        """A duplicate copies its leader's row: wait until the leader's chunk has committed (or failed)."""
        if ref.run_id != self.run_id:
            return
        with self._committing:
            self._committing.wait_for(lambda: (ref.path, profile) not in self._uncommitted)

    def chunk_done(self, files: Iterable[DiscoveredFile]) -> None:
        """Called when a chunk has committed (or failed): wake duplicates waiting on its leaders."""
        with self._committing:
            before = len(self._uncommitted)
            self._uncommitted.difference_update((f.path, f.profile) for f in files)
            if len(self._uncommitted) != before:
                self._committing.notify_all()

    # -- after the walk ----------------------------------------------------------------------------------
    def late_files(self, roots: list[str]) -> Iterator[DiscoveredFile]:
        """Duplicates (to copy their leader's outcome) and `gone` records, once the walk is complete."""
        yield from self._duplicates
        self._duplicates = []
        yield from self._paired_files()
        yield from self._gone(roots)

    def _mass_removals(self, roots: list[str]) -> list[str]:
        """The roots under which marking paths gone is withheld (see MASS_REMOVAL_MIN); records why."""
        withheld = []
        # counted per path, whatever its profiles: a path is there or gone for all of them
        paths: dict[str, PathState] = {}
        for (path, _profile), last in self.state.by_path.items():
            if last.status != Status.GONE:
                paths.setdefault(path, last)
        for root in roots:
            known = lost = 0
            for path, last in paths.items():
                if not _under(path, [root]) or _under(path, self._unreadable_dirs):
                    continue
                known += 1
                if path not in self._seen and not (last.content_hash and last.content_hash in self._hash_seen_at) \
                        and not _still_there(path):  # left out by a filter, a sample or a limit: not lost
                    lost += 1
            walked = self._walked.get(root, 0) if root in self.roots else None
            # walked == 0 alone is not enough: files a filter left out are still there (not counted as lost)
            if lost and ((walked == 0 and lost == known) or (2 * lost > known and lost >= MASS_REMOVAL_MIN)):
                self.withheld.append(WithheldRemoval(root, lost, known, walked))
                if not self.allow_mass_removal:
                    withheld.append(root)
        return withheld

    def _gone(self, roots: list[str]) -> Iterator[DiscoveredFile]:
        held_back = self._mass_removals(roots)
        for (path, profile), last in self.state.by_path.items():
            if last.status == Status.GONE or path in self._seen or not _under(path, roots):
                continue
            if _under(path, self._unreadable_dirs) or _under(path, held_back) or _still_there(path):
                continue  # a file still there was left out by a filter, a sample or a limit: not gone
            moved_to = self._hash_seen_at.get(last.content_hash) if last.content_hash else None
            if moved_to is not None:
                kind, error = ErrorKind.MOVED, f"moved to {moved_to}"
            else:
                kind, error = ErrorKind.REMOVED, "no longer found under the scanned folder"
            yield DiscoveredFile(path=path, size=last.size_bytes or 0, mtime_ns=0, kind=last.kind, mime=last.mime,
                                 content_hash=last.content_hash, status=Status.GONE, error_kind=kind, error=error,
                                 profile=profile)


def profiles_of(settings) -> list:
    """The profiles a run or estimate with `settings` asks (schemas/profiles.py), a bad one as a ConfigError."""
    from enrich.schemas.profiles import ProfileError, profiles_for_run

    try:
        return profiles_for_run(settings)
    except ProfileError as exc:
        raise ConfigError(str(exc)) from None


def known_schemas(settings) -> dict:
    """Every output schema of every profile the settings know, keyed by tasks/records.py profile_key: what
    collecting a batch job needs to read answers of any profile."""
    from enrich.schemas.profiles import ProfileError, known_profiles
    from enrich.tasks.records import profile_key

    try:
        known = known_profiles(settings).known
    except ProfileError as exc:
        raise ConfigError(str(exc)) from None
    return {profile_key(p.name, kind): p.schemas[kind] for p in known.values() for kind in p.kinds()}


def current_versions(settings) -> Callable[[str | None, str | None], str | None]:
    """(kind, profile) -> the enrichment version a run with `settings` would give its rows (no backend)."""
    from enrich.tasks.context import context_fields

    info = run_info_for(profiles_of(settings), run_id="estimate", backend="", model=settings.model,
                        resolution=settings.resolution, price_date="", default_profile=settings.profile,
                        context=",".join(context_fields(settings.context)))
    return lambda kind, profile=None: info.version_of(kind, profile)[2]


def run_info_for(profiles, **kw):
    """The RunInfo of a run asking `profiles` (schemas/profiles.py Profile): prompt and schema hashes per
    (profile, kind)."""
    from enrich.tasks.records import RunInfo, profile_key, schema_hash, short_hash

    prompts, schemas, thinking = [], [], []
    for p in profiles:
        for kind in p.kinds():
            prompts.append((profile_key(p.name, kind), short_hash(p.prompts[kind])))
            schemas.append((profile_key(p.name, kind), schema_hash(p.schemas[kind])))
        if p.thinking_key():
            thinking.append((p.name, p.thinking_key()))
    return RunInfo(prompt_hashes=tuple(sorted(prompts)), schema_hashes=tuple(sorted(schemas)),
                   thinking=tuple(sorted(thinking)), **kw)


def describe_inputs(profiles) -> tuple[dict, dict, dict]:
    """(prompts, schemas, thinking) a Describer needs for `profiles`: prompts and schemas keyed by
    tasks/records.py profile_key, thinking (budget, level) by profile name (only profiles that set one)."""
    from enrich.tasks.records import profile_key

    prompts = {profile_key(p.name, k): p.prompts[k] for p in profiles for k in p.kinds()}
    schemas = {profile_key(p.name, k): p.schemas[k] for p in profiles for k in p.kinds()}
    thinking = {p.name: (p.thinking_budget, p.thinking_level) for p in profiles if p.thinking_key()}
    return prompts, schemas, thinking


def would_send(state: WarehouseState, version_of: Callable[[str | None, str | None], str | None],
               reprocess: Iterable[str] = ()) -> Callable[[DiscoveredFile], bool]:
    """For estimates (which read headers, not content): True unless the file's latest row (for its profile)
    is for the same path, size and mtime and a run would not redo it. Moved files and duplicates are still
    counted, so an estimate can only be high, never low."""
    wanted = parse_reprocess(reprocess)
    probe = Planner(state, "estimate", version_of, wanted)

    def include(file: DiscoveredFile) -> bool:
        last = state.by_path.get((file.path, file.profile))
        if last is None or "all" in wanted:
            return True
        if (last.size_bytes, last.mtime_us) != (file.size, epoch_us(mtime_of(file.mtime_ns))):
            return True
        return not probe._final(last, version_of(file.kind, file.profile))

    return include
