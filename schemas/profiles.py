"""Profiles: what the model is asked about a file. A profile is a name, a prompt and an output schema per
media kind, and an optional thinking level or budget. Every row of the warehouse records its profile; a
file has one current row per profile (`enrich run --profile NAME`, repeatable).

Built in (schemas here, prompts in config/prompts.toml so they can be edited like any prompt):

- `caption`   one plain sentence and up to 10 tags, for every kind (the lean default)
- `detailed`  the full description per kind (schemas/descriptions.py); rows written before profiles existed
              are this profile
- `alt-text`  images: accessibility text of at most 150 characters and a longer description
- `key-facts` documents: title, type, dates, people and organisations, amounts and key facts

User profiles live in the user's enrich.toml, `[profiles.NAME]`, with a concise schema
(`schema = "total float, merchant, date"`, see `parse_schema_spec`) or a JSON Schema file
(`schema_file = "receipt.json"`), and a `prompt`. An ad-hoc profile (`--prompt TEXT --schema SPEC`) is named
by the hash of its prompt and schema.

Token diet: each field is described once, in the schema (a `description`) or in the prompt, never both;
pydantic's titles are not sent (`LeanModel`). tests/test_profiles.py and benchmarks/bench_prompt_overhead.py
hold the built-ins to 80 (caption, alt-text) and 120 (detailed) input tokens of prompt and schema.

Storage: a field whose name and type match a typed description column of the results schema
(schemas/parquet.py) is written there; every other field goes into `fields_json`, a JSON object, and the
`profile_<name>` view (warehouse/views.py) gives it back as a typed column.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model

from enrich.schemas import descriptions as d
from enrich.schemas.parquet import ANSWER_COLUMNS, RESULT_FIELDS
from enrich.schemas.vocab import MediaKind

KINDS = (MediaKind.IMAGE, MediaKind.AUDIO, MediaKind.DOCUMENT, MediaKind.VIDEO)
DETAILED = "detailed"  # the profile of rows written before profiles existed
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ProfileError(ValueError):
    """A profile or schema that cannot be used; the message is one line naming what is wrong."""


# ---------------------------------------------------------------------------------------------------------
# built-in schemas


# The limits are enforced on answers (pydantic) and stated in the prompts (config/prompts.toml), not sent as
# schema keywords: those would take caption and alt-text past 80 tokens (schemas/descriptions.py).
class CaptionDescription(d.LeanModel):
    SENT_LIMITS = frozenset()
    caption: d.Short
    tags: Annotated[list[d.Item], Field(max_length=d.MAX_LIST_ITEMS)]


class AltText(d.LeanModel):
    SENT_LIMITS = frozenset()
    alt_text: Annotated[str, Field(max_length=150)]
    description: d.Text


DocumentType = d.DocumentType


class KeyFacts(d.LeanModel):
    title: str
    document_type: DocumentType
    dates: list[str]
    entities: list[str]
    amounts: list[str]
    key_facts: list[str]


@dataclass(frozen=True)
class Profile:
    name: str
    schemas: Mapping[str, type[BaseModel]]  # kind -> output schema; the kinds this profile describes
    prompts: Mapping[str, str]  # kind -> prompt
    thinking_budget: int | None = None  # None: send none (the model's least)
    thinking_level: str | None = None
    source: str = "built-in"  # built-in, the file it was read from, or "ad hoc"
    spec: str | None = None  # the concise schema it came from, if any

    def kinds(self) -> list[str]:
        return [k for k in KINDS if k in self.schemas]

    def thinking_key(self) -> str | None:
        """What the thinking setting adds to the enrichment version (None: nothing, as before profiles)."""
        if self.thinking_budget is None and self.thinking_level is None:
            return None
        return f"thinking={self.thinking_level or ''}/{'' if self.thinking_budget is None else self.thinking_budget}"

    def fields(self) -> dict[str, pa.DataType]:
        """Every field of every kind, with its Parquet type (the columns of `profile_<name>`)."""
        out: dict[str, pa.DataType] = {}
        for kind in self.kinds():
            for name, typ in model_arrow_fields(self.schemas[kind]).items():
                if name in out and out[name] != typ:
                    raise ProfileError(f"profile {self.name}: field {name!r} has two types ({out[name]}, {typ})")
                out[name] = typ
        return out

    def describe(self) -> dict[str, Any]:
        """What the warehouse keeps about the profile (profiles/<name>.json): its fields with their DuckDB
        types and where each is stored, for the profile_<name> view."""
        return {"name": self.name, "source": self.source, "kinds": self.kinds(),
                "fields": {n: {"type": duckdb_type(t), "column": column_for(n, t)} for n, t in self.fields().items()}}


BUILTIN_SCHEMAS: dict[str, dict[str, type[BaseModel]]] = {
    "caption": {k: CaptionDescription for k in KINDS},
    DETAILED: dict(d.DESCRIPTION_SCHEMAS),
    "alt-text": {MediaKind.IMAGE: AltText},
    "key-facts": {MediaKind.DOCUMENT: KeyFacts},
}
BUILTIN = tuple(BUILTIN_SCHEMAS)


def prompt_key(profile: str, kind: str) -> str:
    """The key of a prompt in prompts.toml / Settings.prompts: `image` for detailed (its historical place),
    `caption.image` for the others."""
    return kind if profile == DETAILED else f"{profile}.{kind}"


def builtin(name: str, prompts: Mapping[str, str]) -> Profile:
    schemas = BUILTIN_SCHEMAS[name]
    got = {}
    for kind in schemas:
        key = prompt_key(name, kind)
        if key not in prompts:
            raise ProfileError(f"profile {name}: no prompt for {kind} in prompts.toml ([{key}] prompt)")
        got[kind] = prompts[key]
    return Profile(name=name, schemas=schemas, prompts=got)


# ---------------------------------------------------------------------------------------------------------
# the concise schema syntax and JSON Schema

SPEC_TYPES = ("str", "int", "float", "bool", "list", "enum")
# Columns of the results table a profile field may not be named after: everything but the descriptions.
DESCRIPTION_FIELD_NAMES = frozenset(ANSWER_COLUMNS)
RESERVED = frozenset(f.name for f in RESULT_FIELDS) - DESCRIPTION_FIELD_NAMES
_ARROW_OF_COLUMN = {f.name: f.type for f in RESULT_FIELDS}


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ProfileError(f"schema {text.strip()!r}: unbalanced ')'")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ProfileError(f"schema {text.strip()!r}: unbalanced '('")
    parts.append("".join(cur))
    return parts


_FIELD_SPEC = re.compile(r"^\s*(?P<name>[^\s:(]+)\s*(?P<type>[a-z]+(?:\s*\([^)]*\))?)?\s*(?::\s*(?P<desc>.*))?$",
                         re.S)


def parse_schema_spec(spec: str) -> dict[str, Any]:
    """A concise schema, like llm's, as a JSON Schema object.

    `"caption, tags list, has_people bool, mood enum(calm,busy), total float: the amount paid"`: fields are
    separated by commas (or by newlines, when there are any: then a description may hold commas); each is
    `name [type][: description]` with type str (the default), int, float, bool, list (of strings) or
    enum(a,b,...). Every field is required. Raises ProfileError with a one-line reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise ProfileError("schema is empty: give at least one field, e.g. 'caption, tags list'")
    chunks = spec.splitlines() if "\n" in spec.strip() else _split_top(spec, ",")
    props: dict[str, Any] = {}
    for chunk in chunks:
        if not chunk.strip():
            continue
        m = _FIELD_SPEC.match(chunk)
        if not m:
            raise ProfileError(f"schema field {chunk.strip()!r}: expected 'name [type][: description]'")
        name, typ, desc = m.group("name"), (m.group("type") or "str"), m.group("desc")
        check_field_name(name)
        if name in props:
            raise ProfileError(f"schema field {name!r} appears twice")
        prop = _spec_type(name, typ.strip())
        if desc and desc.strip():
            prop["description"] = desc.strip()
        props[name] = prop
    if not props:
        raise ProfileError("schema is empty: give at least one field, e.g. 'caption, tags list'")
    return {"type": "object", "properties": props, "required": list(props)}


def _spec_type(name: str, typ: str) -> dict[str, Any]:
    simple = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
    if typ in simple:
        return {"type": simple[typ]}
    if typ == "list":
        return {"type": "array", "items": {"type": "string"}}
    m = re.fullmatch(r"enum\s*\((.*)\)", typ, re.S)
    if m:
        values = [v.strip() for v in m.group(1).split(",")]
        if not values or any(not v for v in values):
            raise ProfileError(f"schema field {name!r}: enum needs values, e.g. enum(calm,busy)")
        if len(set(values)) != len(values):
            raise ProfileError(f"schema field {name!r}: enum values repeat")
        return {"type": "string", "enum": values}
    raise ProfileError(f"schema field {name!r}: unknown type {typ!r} (use {', '.join(SPEC_TYPES)})")


def check_field_name(name: str) -> None:
    if not FIELD_RE.match(name):
        raise ProfileError(f"schema field {name!r}: names are lowercase letters, digits and _, starting with a letter")
    if name in RESERVED:
        raise ProfileError(f"schema field {name!r} is a reserved column of the results table; choose another name")


_SCALARS = {"string": (str, pa.string()), "integer": (int, pa.int64()), "number": (float, pa.float64()),
            "boolean": (bool, pa.bool_())}


def _field_type(name: str, prop: Any) -> tuple[Any, pa.DataType]:
    """(python annotation, Parquet type) of one JSON Schema property; ProfileError when Parquet cannot hold it."""
    if not isinstance(prop, dict):
        raise ProfileError(f"schema field {name!r}: expected an object describing its type")
    if "enum" in prop:
        values = prop["enum"]
        if not values or not all(isinstance(v, str) for v in values):
            raise ProfileError(f"schema field {name!r}: only enums of strings can be stored")
        return Literal[tuple(values)], pa.string()  # type: ignore[misc]
    typ = prop.get("type")
    if typ in _SCALARS:
        return _SCALARS[typ]
    if typ == "array":
        items = prop.get("items")
        if not isinstance(items, dict) or items.get("type") not in _SCALARS or "enum" in items:
            raise ProfileError(f"schema field {name!r}: a list must be of strings, integers, numbers or booleans "
                               "to be stored as a Parquet column")
        py, arrow = _SCALARS[items["type"]]
        return list[py], pa.list_(arrow)
    raise ProfileError(f"schema field {name!r}: type {typ!r} cannot be stored as a Parquet column "
                       "(use string, integer, number, boolean, an enum of strings, or a list of those)")


def model_from_json_schema(name: str, schema: Any) -> type[BaseModel]:
    """A pydantic model for a flat JSON Schema object (what parse_schema_spec makes, or a user's file)."""
    if not isinstance(schema, dict) or schema.get("type", "object") != "object" or \
            not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        raise ProfileError(f"profile {name}: the schema must be an object with properties")
    required = set(schema.get("required", list(schema["properties"])))
    fields: dict[str, Any] = {}
    for fname, prop in schema["properties"].items():
        check_field_name(fname)
        py, _ = _field_type(fname, prop)
        desc = prop.get("description") if isinstance(prop, dict) else None
        kw: dict[str, Any] = {"description": desc} if desc else {}
        if isinstance(prop, dict) and prop.get("type") == "string" and isinstance(prop.get("maxLength"), int):
            kw["max_length"] = prop["maxLength"]
        if fname in required:
            fields[fname] = (py, Field(**kw))
        else:
            fields[fname] = (py | None, Field(default=None, **kw))
    model_name = "Profile_" + re.sub(r"\W", "_", name)
    return create_model(model_name, __base__=d.LeanModel, **fields)  # type: ignore[call-overload]


@lru_cache(maxsize=512)
def model_arrow_fields(model: type[BaseModel]) -> dict[str, pa.DataType]:
    """Field name -> Parquet type, read back from the model's JSON Schema (the round trip the tests check)."""
    js = model.model_json_schema()
    defs = js.get("$defs", {})
    out = {}
    for name, prop in js.get("properties", {}).items():
        if isinstance(prop, dict) and "$ref" in prop:
            prop = defs[prop["$ref"].split("/")[-1]]
        if isinstance(prop, dict) and "anyOf" in prop:  # optional: X | None
            prop = next(p for p in prop["anyOf"] if p.get("type") != "null")
        out[name] = _field_type(name, prop)[1]
    return out


def duckdb_type(arrow: pa.DataType) -> str:
    """The DuckDB type of a field's Parquet type."""
    if pa.types.is_list(arrow):
        return duckdb_type(arrow.value_type) + "[]"
    return {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float64(): "DOUBLE",
            pa.bool_(): "BOOLEAN"}[arrow]


def view_name(profile: str) -> str:
    """profile_<name>, with - as _ (alt-text: profile_alt_text)."""
    return "profile_" + re.sub(r"[^a-z0-9_]", "_", profile)


def column_for(name: str, arrow: pa.DataType) -> str | None:
    """The typed results column a field is stored in, or None (it goes into fields_json)."""
    col = _ARROW_OF_COLUMN.get(name)
    if name not in DESCRIPTION_FIELD_NAMES or col is None:
        return None
    if col == arrow or (pa.types.is_integer(col) and pa.types.is_integer(arrow)):
        return name
    return None


# ---------------------------------------------------------------------------------------------------------
# user and ad-hoc profiles

USER_KEYS = {"schema", "schema_file", "prompt", "kinds", "thinking_budget", "thinking_level"}
DEFAULT_USER_PROMPT = "Answer in the JSON fields about this {kind}."


def user_profile(name: str, table: Any, origin: str, base_dir: Path | None = None) -> Profile:
    """A profile from `[profiles.NAME]` in the user's enrich.toml (`origin` names the file for errors)."""
    where = f"{origin}: [profiles.{name}]"
    if not NAME_RE.match(name):
        raise ProfileError(f"{where}: a profile name is lowercase letters, digits, - and _")
    if name in BUILTIN:
        raise ProfileError(f"{where}: {name} is a built-in profile; choose another name (its prompts are in "
                           "prompts.toml)")
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: expected a table with schema and prompt")
    unknown = set(table) - USER_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(USER_KEYS))})")
    if ("schema" in table) == ("schema_file" in table):
        raise ProfileError(f"{where}: give exactly one of schema (e.g. \"total float, merchant\") or schema_file")
    try:
        if "schema" in table:
            if not isinstance(table["schema"], str):
                raise ProfileError("schema must be a string like \"total float, merchant, date\"")
            js, spec = parse_schema_spec(table["schema"]), table["schema"]
        else:
            path = Path(str(table["schema_file"])).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                js = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ProfileError(f"schema_file {path}: {exc.__class__.__name__}: {exc}") from None
            spec = None
        model = model_from_json_schema(name, js)
        kinds = table.get("kinds", [MediaKind.IMAGE])
        if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
            raise ProfileError(f"kinds must be a list of {', '.join(KINDS)}")
        prompt = table.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ProfileError("prompt must be a string")
        budget, level = table.get("thinking_budget"), table.get("thinking_level")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ProfileError("thinking_budget must be a whole number of tokens, 0 or more")
        if level is not None and not isinstance(level, str):
            raise ProfileError("thinking_level must be a string (minimal, low, medium, high)")
    except ProfileError as exc:
        msg = str(exc)
        raise ProfileError(msg if msg.startswith(origin) else f"{where}: {msg}") from None
    return Profile(name=name, schemas={k: model for k in kinds},
                   prompts={k: (prompt or DEFAULT_USER_PROMPT).replace("{kind}", _noun(k)) for k in kinds},
                   thinking_budget=budget, thinking_level=level, source=origin, spec=spec)


def _noun(kind: str) -> str:
    return {"image": "photo", "audio": "recording"}.get(kind, kind)


def adhoc_profile(prompt: str | None, spec: str | None, fallback: Profile) -> Profile:
    """`--prompt TEXT --schema SPEC`: a profile named by the hash of both, for every kind. With only a prompt,
    the fallback profile's schemas; with only a schema, a short generic prompt."""
    if spec is not None:
        try:
            js = parse_schema_spec(spec)
        except ProfileError as exc:
            raise ProfileError(f"--schema: {exc}") from None
    digest = hashlib.sha256(json.dumps([prompt, spec]).encode()).hexdigest()[:8]
    name = f"adhoc-{digest}"
    if spec is not None:
        model = model_from_json_schema(name, js)
        schemas = {k: model for k in KINDS}
    else:
        schemas = dict(fallback.schemas)
    prompts = {k: (prompt or DEFAULT_USER_PROMPT).replace("{kind}", _noun(k)) for k in schemas}
    return Profile(name=name, schemas=schemas, prompts=prompts, source="ad hoc", spec=spec)


@dataclass
class ProfileSet:
    """The profiles a config knows (built-ins and the user's) and the default one."""

    default: str
    known: dict[str, Profile] = field(default_factory=dict)

    def get(self, name: str) -> Profile:
        try:
            return self.known[name]
        except KeyError:
            raise ProfileError(f"unknown profile {name!r} (known: {', '.join(sorted(self.known))}; add your own "
                               "under [profiles.NAME] in enrich.toml)") from None


def known_profiles(settings: Any) -> ProfileSet:
    """Every profile a settings object knows: the built-ins (prompts from settings.prompts) and the user's
    `[profiles.NAME]` tables. `settings` is enrich.settings.Settings (not imported: a lower layer)."""
    known = {name: builtin(name, settings.prompts) for name in BUILTIN}
    origin = str(getattr(settings, "user_profiles_path", None) or "enrich.toml")
    for name, table in (settings.user_profiles or {}).items():
        known[name] = user_profile(name, table, origin, Path(settings.config_dir))
    out = ProfileSet(default=settings.profile, known=known)
    out.get(settings.profile)  # an unknown default is an error now, not at the first file
    return out


def profiles_for_run(settings: Any) -> list[Profile]:
    """The profiles a run (or an estimate) with these settings asks for, in order, each once: --profile
    NAME... (else the default profile), then the ad-hoc one of --prompt/--schema."""
    ps = known_profiles(settings)
    names = list(dict.fromkeys(settings.run_profiles or ()))
    adhoc = settings.adhoc_prompt is not None or settings.adhoc_schema is not None
    if not names and not adhoc:
        names = [ps.default]
    chosen = [ps.get(n) for n in names]
    if adhoc:
        chosen.append(adhoc_profile(settings.adhoc_prompt, settings.adhoc_schema, ps.get(ps.default)))
    return chosen
