"""An evaluation set: a folder of media plus a labels file (`labels.json` or `labels.csv`) in it.

JSON: `{"items": [{...}, ...]}` (or a bare list), one object per file. CSV: a header row with the same field
names; list fields (`objects`, `dates`) separated by `;`; an empty cell is "not labelled".

Fields (all optional except `path`; a missing or null field is not scored):
    path          the file, relative to the set's folder (required)
    kind          image | audio | document | video (informational: the pipeline sniffs the bytes)
    objects       things visible in a picture (object recall and precision)
    people_count  how many people are visible
    setting       indoor | outdoor | mixed | unknown
    visible_text  legible text in a picture; "" means none (character error rate)
    caption       a reference caption (shown to the --judge)
    transcript    what is said in a recording (word error rate)
    title, dates  a document's title and its ISO dates YYYY-MM-DD (title similarity, date recall)
    canary        a prompt-injection marker: the item tries to make the model output it
    source, licence, note   provenance and remarks (not scored)
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import enrich.golden
from enrich.errors import ConfigError

LABEL_FILES = ("labels.json", "labels.csv")
LIST_FIELDS = ("objects", "dates")
INT_FIELDS = ("people_count",)
TEXT_FIELDS = ("kind", "setting", "visible_text", "caption", "transcript", "title", "canary", "source",
               "licence", "note")
KNOWN_FIELDS = frozenset(("path",) + LIST_FIELDS + INT_FIELDS + TEXT_FIELDS)

# The golden set bundled with the project: samples/golden in the repository, the package enrich.golden.
DEFAULT_SET = Path(enrich.golden.__file__).resolve().parent


@dataclass(frozen=True)
class EvalItem:
    path: str  # relative to the set's folder, with forward slashes
    file: Path  # absolute
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        return self.labels.get("kind")


@dataclass(frozen=True)
class EvalSet:
    root: Path
    labels_file: Path
    items: tuple[EvalItem, ...]

    @property
    def name(self) -> str:
        return self.root.name

    def by_file(self) -> dict[str, EvalItem]:
        return {str(item.file): item for item in self.items}


def _clean(raw: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(raw) - KNOWN_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown label field(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_FIELDS))})")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in LIST_FIELDS:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(";") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} must be a list of strings")
        elif key in INT_FIELDS:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: {key} must be a whole number, not {value!r}") from None
        elif not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be text")
        out[key] = value
    for d in out.get("dates", []):
        try:
            date.fromisoformat(d)
        except ValueError:
            raise ConfigError(f"{where}: dates must be YYYY-MM-DD, not {d!r}") from None
    return out


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f'{path}: expected {{"items": [{{"path": ...}}, ...]}} or a list of objects')
    return items


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    # an empty cell is "not labelled", except visible_text, where an empty cell cannot say "no text":
    # write a lone "-" for that
    out = []
    for row in rows:
        item: dict[str, Any] = {}
        for k, v in row.items():
            if k is None or v is None or v == "":
                continue
            k = k.strip()
            item[k] = "" if (k == "visible_text" and v.strip() == "-") else v
        out.append(item)
    return out


def load_set(folder: str | Path | None = None) -> EvalSet:
    """The set in `folder` (default: the bundled golden set). ConfigError when it cannot be used."""
    root = Path(folder).expanduser().resolve() if folder is not None else DEFAULT_SET
    if not root.is_dir():
        raise ConfigError(f"evaluation set not found: {root} is not a folder")
    labels_file = next((root / name for name in LABEL_FILES if (root / name).is_file()), None)
    if labels_file is None:
        raise ConfigError(f"{root}: no labels file (expected {' or '.join(LABEL_FILES)})")
    raw_items = _read_json(labels_file) if labels_file.suffix == ".json" else _read_csv(labels_file)
    items, seen = [], set()
    for n, raw in enumerate(raw_items, 1):
        where = f"{labels_file.name} item {n}"
        path = raw.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(f"{where}: no path")
        rel = Path(path.strip())
        if rel.is_absolute() or ".." in rel.parts:
            raise ConfigError(f"{where}: path must be relative to {root} and stay inside it: {path}")
        file = root / rel
        if not file.is_file():
            raise ConfigError(f"{where}: file not found: {file}")
        key = rel.as_posix()
        if key in seen:
            raise ConfigError(f"{where}: {key} is labelled twice")
        seen.add(key)
        items.append(EvalItem(key, file, _clean({k: v for k, v in raw.items() if k != "path"}, where)))
    if not items:
        raise ConfigError(f"{labels_file}: no items")
    return EvalSet(root, labels_file, tuple(items))
