"""JSON for backends that cannot enforce a schema server-side (local models, plain OpenAI-compatible servers).

- `schema_prompt(schema)`: a short instruction naming the fields and their types. It is appended to the
  prompt and counted as input tokens, so it stays compact (about 100 tokens for ImageDescription).
- `parse_or_repair(text, schema)`: validate the model's text, or a repaired form of it, against the schema.
  Repairs: code fences and prose around the object, trailing commas, single-quoted strings, Python
  literals (True/False/None), `//` comments, raw newlines in strings, a truncated tail (unclosed string,
  missing closing brackets/braces, cut back to the last complete field), unquoted keys and, at the top
  level, an enum value that differs only in case or spaces and null in a required string field (-> "").
  Everything else is pydantic's lax mode (e.g. "3" for an int). Raises `InvalidOutput` (a ValueError)
  carrying the raw text when nothing validates.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["InvalidOutput", "schema_prompt", "parse_or_repair", "repair_json_text", "REPAIR_SUFFIX"]

# Appended (after schema_prompt) when a first answer did not validate.
REPAIR_SUFFIX = (
    "Your previous answer was not valid. Output ONLY the JSON object: start with { and end with }, "
    "double-quoted keys and strings, every key present, no other text."
)

_MAX_CANDIDATES = 32  # '{' positions tried as the start of the object
_MAX_TRUNCATIONS = 64  # cut points tried when closing a truncated object


class InvalidOutput(ValueError):
    """The model's text is not (and could not be repaired into) a valid instance of the schema."""

    def __init__(self, message: str, *, raw_text: str, errors: str | None = None) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.errors = errors


# --------------------------------------------------------------------------------------------- prompt


def _type_phrase(prop: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return _type_phrase(defs.get(name, {}), defs, depth)
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    for key in ("anyOf", "oneOf"):
        if key in prop:
            parts = [p for p in prop[key] if p.get("type") != "null"]
            nullable = len(parts) != len(prop[key])
            phrase = " or ".join(_type_phrase(p, defs, depth) for p in parts) or "null"
            return phrase + (" or null" if nullable else "")
    t = prop.get("type")
    if t == "array":
        items = prop.get("items", {})
        inner = _type_phrase(items, defs, depth)
        plural = {"string": "strings", "integer": "integers", "number": "numbers", "boolean": "booleans"}
        return "list of " + plural.get(inner, inner)
    if t == "object":
        props = prop.get("properties")
        if not props or depth > 2:
            return "object"
        inner = ", ".join(f'"{k}": {_type_phrase(v, defs, depth + 1)}' for k, v in props.items())
        return "{" + inner + "}"
    if isinstance(t, list):
        return " or ".join(str(x) for x in t)
    return str(t or "value")


@lru_cache(maxsize=64)
def _schema_prompt_cached(schema: type[BaseModel]) -> str:
    js = schema.model_json_schema()
    defs = js.get("$defs", {})
    lines = ["Reply with only one JSON object (no prose, no code fences) with exactly these keys:"]
    for name, prop in js.get("properties", {}).items():
        line = f'"{name}": {_type_phrase(prop, defs)}'
        desc = (prop.get("description") or "").strip()
        if desc:
            line += f" - {desc}"
        lines.append(line)
    return "\n".join(lines)


def schema_prompt(schema: type[BaseModel]) -> str:
    """A compact instruction describing the JSON object to output: one line per field, with its type."""
    return _schema_prompt_cached(schema)


# --------------------------------------------------------------------------------------------- repair

_FENCE_RE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\r?\n?(.*?)(?:```|\Z)", re.S)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _strip_fences(text: str) -> list[str]:
    """The contents of each fenced block, if any (an unclosed last fence runs to the end)."""
    return [m.group(1) for m in _FENCE_RE.finditer(text) if m.group(1).strip()]


def _match_object(text: str, start: int) -> int | None:
    """Index just past the '}' closing the object opened at `start` (string-aware), or None if unclosed."""
    depth = 0
    in_str: str | None = None
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == in_str:
                in_str = None
        elif c == '"' or (c == "'" and _opens_single_quote(text, i)):
            in_str = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _opens_single_quote(text: str, i: int) -> bool:
    """A ' opens a string only where a JSON value or key may start (not an apostrophe in prose)."""
    j = i - 1
    while j >= 0 and text[j] in " \t\r\n":
        j -= 1
    return j >= 0 and text[j] in "{[,:"


def _candidates(text: str) -> list[str]:
    """Substrings that may hold the object: each '{' to its matching '}' (or to the end if unclosed)."""
    out: list[str] = []
    seen: set[str] = set()
    sources = [text] + _strip_fences(text)
    for src in sources:
        count = 0
        pos = src.find("{")
        while pos != -1 and count < _MAX_CANDIDATES:
            end = _match_object(src, pos)
            cand = src[pos:end] if end is not None else src[pos:]
            if cand not in seen:
                seen.add(cand)
                out.append(cand)
            count += 1
            pos = src.find("{", pos + 1)
    return out


def repair_json_text(s: str) -> tuple[str, list[int]]:
    """Rewrite JSON-ish text into JSON text, closing whatever is left open at the end.

    Returns the repaired text and the positions (in the repaired text) of the commas outside strings,
    usable as cut points when the tail is truncated mid-value.
    """
    out: list[str] = []
    stack: list[str] = []
    cuts: list[int] = []
    length = 0
    in_str: str | None = None

    def emit(piece: str) -> None:
        nonlocal length
        out.append(piece)
        length += len(piece)

    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if in_str:
            if c == "\\":
                if i + 1 < n:
                    nxt = s[i + 1]
                    emit("'" if nxt == "'" else c + nxt)  # \' is not a JSON escape
                i += 2  # a lone backslash at the very end is dropped
                continue
            if c == in_str:
                emit('"')
                in_str = None
            elif c == '"':  # a double quote inside a single-quoted string
                emit('\\"')
            elif c in _CONTROL_ESCAPES:
                emit(_CONTROL_ESCAPES[c])
            else:
                emit(c)
            i += 1
            continue
        if c == '"':
            in_str = '"'
            emit('"')
        elif c == "'" and _opens_single_quote(s, i):
            in_str = "'"
            emit('"')
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
            emit(c)
        elif c in "}]":
            length -= _drop_trailing_comma(out)
            if stack:
                stack.pop()
            emit(c)
            if not stack:  # the object is complete: ignore anything after it
                return "".join(out), cuts
        elif c == ",":
            cuts.append(length)
            emit(c)
        elif c == "/" and i + 1 < n and s[i + 1] == "/":
            nl = s.find("\n", i)
            i = n if nl == -1 else nl
            continue
        elif c.isalpha() or c == "_":
            m = _WORD_RE.match(s, i)
            word = m.group(0) if m else c
            if word in _PY_LITERALS:
                emit(_PY_LITERALS[word])
            elif word in ("true", "false", "null"):
                emit(word)
            elif stack and stack[-1] == "}" and _KEY_FOLLOWS_RE.match(s, i + len(word)):
                emit(json.dumps(word))  # an unquoted key
            else:
                emit(word)
            i += len(word)
            continue
        else:
            emit(c)
        i += 1
    # Truncated: close the open string, drop a dangling separator, close the containers.
    if in_str:
        emit('"')
    _drop_trailing_comma(out)
    text = "".join(out).rstrip()
    if text.endswith(":"):
        text += " null"
    return text + "".join(reversed(stack)), cuts


_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_FOLLOWS_RE = re.compile(r"\s*:")


def _drop_trailing_comma(out: list[str]) -> int:
    """Remove a ',' left before a closing bracket (or the end); return the characters removed."""
    j = len(out) - 1
    while j >= 0 and out[j] in (" ", "\t", "\r", "\n"):
        j -= 1
    if j >= 0 and out[j] == ",":
        del out[j]
        return 1
    return 0


def _close(prefix: str) -> str:
    """Close what is open at the end of `prefix` (already repaired, so plain JSON syntax)."""
    text, _ = repair_json_text(prefix)
    return text


def _loads(text: str) -> Any:
    return json.loads(text, strict=False)


def _coerce(obj: Any, schema: type[BaseModel]) -> Any:
    """Top-level fixes beyond pydantic's lax mode, applied only after a first validation failed:
    an enum value that differs only in case/whitespace becomes the allowed value, and null in a
    required plain-string field becomes "" (models write null for "legible text, or empty")."""
    if not isinstance(obj, dict):
        return obj
    enums, strings = _field_kinds(schema)
    fixed = dict(obj)
    for name, allowed in enums.items():
        v = fixed.get(name)
        if isinstance(v, str) and v not in allowed:
            norm = " ".join(v.split()).lower()
            for a in allowed:
                if isinstance(a, str) and a.lower() == norm:
                    fixed[name] = a
                    break
    for name in strings:
        if name in fixed and fixed[name] is None:
            fixed[name] = ""
    return fixed


@lru_cache(maxsize=64)
def _field_kinds(schema: type[BaseModel]) -> tuple[dict[str, tuple], frozenset[str]]:
    js = schema.model_json_schema()
    defs = js.get("$defs", {})
    enums: dict[str, tuple] = {}
    strings: set[str] = set()
    for name, prop in js.get("properties", {}).items():
        if "$ref" in prop:
            prop = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        if "enum" in prop:
            enums[name] = tuple(prop["enum"])
        elif prop.get("type") == "string":
            strings.add(name)
    return enums, frozenset(strings)


def _validate(obj: Any, schema: type[BaseModel]) -> BaseModel:
    try:
        return schema.model_validate(obj)
    except ValidationError:
        fixed = _coerce(obj, schema)
        if fixed == obj:
            raise
        return schema.model_validate(fixed)


def parse_or_repair(text: str, schema: type[BaseModel]) -> BaseModel:
    """Validate `text` against `schema`, repairing common model slips; raise InvalidOutput otherwise."""
    if text is None:
        raise InvalidOutput("no output", raw_text="")
    stripped = text.strip()
    try:
        return schema.model_validate_json(stripped)
    except ValidationError as e:
        last_error: str = _short_errors(e)
    except ValueError as e:  # pragma: no cover - pydantic raises ValidationError for bad JSON too
        last_error = str(e)

    for cand in _candidates(text):
        # 1. as is (lax validation)
        try:
            return _validate(_loads(cand), schema)
        except ValidationError as e:
            last_error = _short_errors(e)
        except ValueError:
            pass
        # 2. repaired (quotes, commas, literals, truncation)
        repaired, cuts = repair_json_text(cand)
        try:
            return _validate(_loads(repaired), schema)
        except ValidationError as e:
            last_error = _short_errors(e)
            continue  # complete JSON with wrong content: cutting the tail will not help
        except ValueError:
            pass
        # 3. truncated mid-value: cut back to an earlier comma, then close
        for cut in list(reversed(cuts))[:_MAX_TRUNCATIONS]:
            try:
                return _validate(_loads(_close(repaired[:cut])), schema)
            except ValidationError as e:
                last_error = _short_errors(e)
                break  # the shortest closable prefix already lacks fields; shorter ones lack more
            except ValueError:
                continue

    snippet = stripped[:200] + ("..." if len(stripped) > 200 else "")
    msg = f"output is not a valid {schema.__name__}"
    if last_error:
        msg += f": {last_error}"
    raise InvalidOutput(f"{msg} (text: {snippet!r})", raw_text=text, errors=last_error)


def _short_errors(e: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {err.get('msg')}")
    more = e.error_count() - limit
    if more > 0:
        parts.append(f"... {more} more")
    return "; ".join(parts)
