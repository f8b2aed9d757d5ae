"""Content-dependent fake answers: probe the media a request carries, then fill a response schema
(Gemini OpenAPI-style `responseSchema` or JSON Schema `responseJsonSchema`) or write plain text.

Everything here is deterministic for a given input: the same media and prompt give the same answer.
"""
from __future__ import annotations

import colorsys
import hashlib
import io
import math
import re
import struct
import threading
import wave
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .tokens import modality_of_mime

try:  # optional decoders; the emulator degrades gracefully without them
    from PIL import Image, ImageOps

    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except Exception:  # pragma: no cover
        pass
except Exception:  # pragma: no cover
    Image = None  # type: ignore[assignment]
    ImageOps = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------
# Media probing
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MediaFacts:
    mime: str
    modality: str | None  # TEXT / IMAGE / AUDIO / VIDEO / DOCUMENT / None (unsupported)
    sha256: str
    size_bytes: int
    ok: bool = True  # False when the bytes could not be decoded as that type
    width: int | None = None
    height: int | None = None
    colour: str | None = None
    colour2: str | None = None
    brightness: float | None = None  # 0..1
    duration_s: float | None = None
    pages: int | None = None
    text: str | None = None  # decoded text (TEXT) or first-page text (PDF), capped
    text_chars: int = 0  # full decoded length for TEXT media (token counting)


_TEXT_CAP = 2000


def _name_colour(r: float, g: float, b: float) -> str:
    h, s, v = colorsys.rgb_to_hsv(r / 255.0, g / 255.0, b / 255.0)
    if v < 0.18:
        return "black"
    if s < 0.18:
        if v > 0.85:
            return "white"
        return "gray"
    deg = h * 360.0
    if deg < 15 or deg >= 340:
        return "red"
    if deg < 40:
        return "brown" if v < 0.6 else "orange"
    if deg < 70:
        return "yellow"
    if deg < 165:
        return "green"
    if deg < 200:
        return "cyan"
    if deg < 255:
        return "blue"
    if deg < 290:
        return "purple"
    return "pink"


def _probe_image(data: bytes) -> dict[str, Any]:
    if Image is None:
        return {"ok": False}
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        try:
            im = ImageOps.exif_transpose(im)  # orientation as a viewer sees it
            dw, dh = im.size
        except Exception:
            dw, dh = w, h
        try:
            im.draft("RGB", (64, 64))
        except Exception:
            pass
        im = im.convert("RGB")
        im.thumbnail((32, 32))
        px = list(im.getdata())
    except Exception:
        return {"ok": False}
    counts: dict[str, int] = {}
    lum = 0.0
    for r, g, b in px:
        c = _name_colour(r, g, b)
        counts[c] = counts.get(c, 0) + 1
        # perceived brightness: mean of luma and HSV value (a saturated red is not "dark")
        lum += 0.5 * (0.299 * r + 0.587 * g + 0.114 * b) + 0.5 * max(r, g, b)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    colour = ranked[0][0] if ranked else "gray"
    colour2 = ranked[1][0] if len(ranked) > 1 else None
    brightness = lum / (255.0 * max(1, len(px)))
    return {"ok": True, "width": w, "height": h, "colour": colour, "colour2": colour2,
            "brightness": round(brightness, 4), "_display": (dw, dh)}


def _probe_audio(data: bytes, mime: str) -> dict[str, Any]:
    if "wav" in mime or data[:4] == b"RIFF":
        try:
            with wave.open(io.BytesIO(data)) as w:
                rate = w.getframerate()
                if rate > 0:
                    return {"ok": True, "duration_s": w.getnframes() / float(rate)}
        except Exception:
            pass
    return _probe_mutagen(data)


def _probe_mutagen(data: bytes, mp4: bool = False) -> dict[str, Any]:
    try:
        import mutagen

        if mp4:
            from mutagen.mp4 import MP4

            f = MP4(io.BytesIO(data))
        else:
            f = mutagen.File(io.BytesIO(data))
        length = getattr(getattr(f, "info", None), "length", None) if f is not None else None
        if length is not None and length >= 0:
            return {"ok": True, "duration_s": float(length)}
    except Exception:
        pass
    return {"ok": False}


def _vint(data: bytes, i: int, marker: bool) -> tuple[int, int]:
    """EBML variable-length integer at data[i]: (value, next index); value -1 for 'unknown size'."""
    b = data[i]
    n = next(k for k in range(1, 9) if b & (0x80 >> (k - 1)))
    v = b if marker else b & (0xFF >> n)
    for c in data[i + 1:i + n]:
        v = (v << 8) | c
    if not marker and v == (1 << (7 * n)) - 1:
        v = -1
    return v, i + n


def _probe_webm(data: bytes) -> dict[str, Any]:
    """Duration x TimecodeScale from the Segment's Info element (what a WebM muxer writes up front)."""
    try:
        i = 0
        ident, i = _vint(data, i, True)
        size, i = _vint(data, i, False)
        if ident != 0x1A45DFA3 or size < 0:
            return {"ok": False}
        i += size
        ident, i = _vint(data, i, True)
        size, i = _vint(data, i, False)
        if ident != 0x18538067:
            return {"ok": False}
        end = len(data) if size < 0 else min(len(data), i + size)
        while i < end:
            ident, i = _vint(data, i, True)
            size, i = _vint(data, i, False)
            if size < 0 or ident == 0x1F43B675:  # a cluster: media data, the header is over
                break
            if ident != 0x1549A966:
                i += size
                continue
            scale, duration, j = 1_000_000, None, i
            while j < i + size:
                cid, j = _vint(data, j, True)
                csize, j = _vint(data, j, False)
                body = data[j:j + csize]
                if cid == 0x2AD7B1:
                    scale = int.from_bytes(body, "big") or 1_000_000
                elif cid == 0x4489 and csize in (4, 8):
                    duration = struct.unpack(">f" if csize == 4 else ">d", body)[0]
                j += csize
            if duration:
                return {"ok": True, "duration_s": duration * scale / 1e9}
            break
    except (IndexError, StopIteration, struct.error):
        pass
    return {"ok": False}


def _probe_video(data: bytes, mime: str) -> dict[str, Any]:
    if any(k in mime for k in ("mp4", "quicktime", "3gpp", "m4v", "mov")) or data[4:8] == b"ftyp":
        r = _probe_mutagen(data, mp4=True)
        if r.get("ok"):
            return r
    if "webm" in mime or "matroska" in mime or data[:4] == b"\x1a\x45\xdf\xa3":
        r = _probe_webm(data)
        if r.get("ok"):
            return r
    return _probe_mutagen(data)


def _probe_pdf(data: bytes) -> dict[str, Any]:
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        pages = len(reader.pages)
        text = ""
        if pages:
            try:
                text = (reader.pages[0].extract_text() or "")[:_TEXT_CAP]
            except Exception:
                text = ""
        return {"ok": pages > 0, "pages": pages, "text": text}
    except Exception:
        return {"ok": False}


def _probe_text(data: bytes) -> dict[str, Any]:
    text = data.decode("utf-8", errors="replace")
    return {"ok": True, "text": text[:_TEXT_CAP], "text_chars": len(text)}


def probe_media(mime: str, data: bytes, sha256: str | None = None) -> MediaFacts:
    mime = (mime or "application/octet-stream").lower().split(";", 1)[0].strip()
    sha = sha256 or hashlib.sha256(data).hexdigest()
    modality = modality_of_mime(mime)
    info: dict[str, Any] = {}
    if modality == "IMAGE":
        info = _probe_image(data)
    elif modality == "AUDIO":
        info = _probe_audio(data, mime)
    elif modality == "VIDEO":
        info = _probe_video(data, mime)
    elif modality == "DOCUMENT":
        info = _probe_pdf(data)
    elif modality == "TEXT":
        info = _probe_text(data)
    else:
        info = {"ok": False}
    info.pop("_display", None)
    return MediaFacts(mime=mime, modality=modality, sha256=sha, size_bytes=len(data), **info)


class FactsCache:
    """Bounded LRU of probe results keyed by (sha256, mime): keeps memory flat, avoids re-decoding."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._d: OrderedDict[tuple[str, str], MediaFacts] = OrderedDict()
        self._lock = threading.Lock()
        self._max = maxsize

    def get(self, mime: str, data: bytes) -> MediaFacts:
        sha = hashlib.sha256(data).hexdigest()
        key = (sha, (mime or "").lower())
        with self._lock:
            f = self._d.get(key)
            if f is not None:
                self._d.move_to_end(key)
                return f
        f = probe_media(mime, data, sha)
        with self._lock:
            self._d[key] = f
            while len(self._d) > self._max:
                self._d.popitem(last=False)
        return f

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


# ---------------------------------------------------------------------------------------------
# What the fake model "sees"
# ---------------------------------------------------------------------------------------------

_COLOUR_OBJECTS = {
    "blue": ["sky", "water"], "cyan": ["sea", "ice"], "green": ["grass", "trees"],
    "red": ["flower", "apple"], "orange": ["sunset", "fruit"], "yellow": ["sun", "sand"],
    "brown": ["wood", "earth"], "purple": ["flowers", "dusk"], "pink": ["blossom", "petals"],
    "white": ["snow", "clouds"], "black": ["night", "shadow"], "gray": ["stone", "road"],
}

_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'\-]*")


def _first_words(text: str, n: int = 8) -> str:
    words = text.split()
    s = " ".join(words[:n])
    return s + ("..." if len(words) > n else "")


def _dur_words(d: float | None) -> str:
    if d is None:
        return "an"
    return f"a {max(1, round(d))}-second"


@dataclass
class Scene:
    """A content-derived description used to fill fields."""

    kind: str  # picture / audio / video / document / text
    caption: str
    details: str
    title: str
    tags: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # all descriptive words, for enum matching
    brightness: float | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    pages: int | None = None
    digest: str = ""  # stable hash of the inputs

    def h(self, salt: str, mod: int) -> int:
        return int(hashlib.sha256((self.digest + "|" + salt).encode()).hexdigest()[:8], 16) % max(1, mod)


def _brightness_word(b: float) -> str:
    if b < 0.25:
        return "dark"
    if b < 0.45:
        return "dim"
    if b < 0.7:
        return "well-lit"
    return "bright"


def _scene_for(f: MediaFacts) -> Scene:
    if f.modality == "IMAGE" and f.ok and f.width:
        w, h = f.width, f.height or 0
        orient = "landscape" if w > h * 1.05 else ("portrait" if h > w * 1.05 else "square")
        bw = _brightness_word(f.brightness or 0.0)
        colour = f.colour or "gray"
        caption = f"A {bw}, mostly {colour} {orient} picture"
        second = f" with touches of {f.colour2}" if f.colour2 else ""
        details = f"The {w}x{h} pixel image is dominated by {colour}{second}."
        objects = list(_COLOUR_OBJECTS.get(colour, ["scene"]))
        if f.colour2 and f.colour2 != colour:
            objects.append(_COLOUR_OBJECTS.get(f.colour2, ["detail"])[0])
        size = "large" if max(w, h) >= 1024 else "small"
        tags = [colour, bw, orient, "picture", size]
        colours = [colour] + ([f.colour2] if f.colour2 else [])
        return Scene("picture", caption, details, f"{colour.capitalize()} {orient} picture", tags, objects,
                     colours, tags + objects, f.brightness, w, h, digest=f.sha256)
    if f.modality == "IMAGE":
        return Scene("picture", "An unreadable picture", "The image could not be decoded.", "Unreadable picture",
                     ["picture", "unreadable"], ["unknown"], [], ["picture"], digest=f.sha256)
    if f.modality == "AUDIO":
        d = f.duration_s
        length = "short" if (d or 0) < 30 else "long"
        caption = f"{_dur_words(d).capitalize()} {length} audio recording"
        details = (f"The recording lasts about {d:.1f} seconds." if d is not None
                   else "The recording's length is unknown.")
        return Scene("audio", caption, details, f"{length.capitalize()} audio recording",
                     ["audio", length, "recording"], ["sound"], [], ["audio", length, "recording", "sound"],
                     duration_s=d, digest=f.sha256)
    if f.modality == "VIDEO":
        d = f.duration_s
        length = "short" if (d or 0) < 60 else "long"
        caption = f"{_dur_words(d).capitalize()} {length} video clip"
        details = (f"The clip lasts about {d:.1f} seconds." if d is not None
                   else "The clip's length is unknown.")
        return Scene("video", caption, details, f"{length.capitalize()} video clip",
                     ["video", length, "clip"], ["footage"], [], ["video", length, "clip", "footage"],
                     duration_s=d, digest=f.sha256)
    if f.modality == "DOCUMENT":
        p = f.pages or 1
        fw = _first_words(f.text or "")
        caption = f"A {p}-page PDF document" + (f" beginning '{fw}'" if fw else "")
        details = f"The document has {p} page{'s' if p != 1 else ''}."
        words = [w.lower() for w in _WORD_RE.findall(f.text or "")][:6]
        tags = ["document", "pdf", "multi-page" if p > 1 else "single-page"] + [w for w in words if len(w) > 3][:3]
        return Scene("document", caption, details, f"{p}-page document", tags, ["page", "text"], [],
                     tags + words, pages=p, digest=f.sha256)
    # TEXT
    text = f.text or ""
    fw = _first_words(text)
    words = [w.lower() for w in _WORD_RE.findall(text)][:12]
    tags = ["text"] + [w for w in words if len(w) > 3][:4]
    return Scene("text", f"A text beginning '{fw}'" if fw else "An empty text",
                 f"The text has {len(text.split())} words.", fw or "Empty text", tags, words[:3] or ["text"],
                 [], tags + words, digest=f.sha256)


def build_scene(media: list[MediaFacts], prompt_text: str) -> Scene:
    """One scene for a request: the first media part leads; tags are merged across parts."""
    if not media:
        fw = _first_words(prompt_text)
        words = [w.lower() for w in _WORD_RE.findall(prompt_text)][:12]
        digest = hashlib.sha256(prompt_text.encode()).hexdigest()
        tags = [w for w in words if len(w) > 3][:5] or ["text"]
        return Scene("text", f"A reply about '{fw}'" if fw else "An empty request",
                     "No media was attached.", fw or "Reply", tags, tags[:3], [], tags + words, digest=digest)
    scenes = [_scene_for(f) for f in media]
    lead = scenes[0]
    if len(scenes) == 1:
        return lead
    tags: list[str] = []
    objects: list[str] = []
    for s in scenes:
        tags += [t for t in s.tags if t not in tags]
        objects += [o for o in s.objects if o not in objects]
    digest = hashlib.sha256("|".join(s.digest for s in scenes).encode()).hexdigest()
    details = lead.details + f" {len(scenes)} media parts were attached."
    return Scene(lead.kind, lead.caption, details, lead.title, tags, objects, lead.colours,
                 tags + objects + lead.words, lead.brightness, lead.width, lead.height, lead.duration_s,
                 lead.pages, digest)


_INJECTION_RE = re.compile(r"ignore\s+(?:all\s+)?(?:the\s+)?(?:previous|prior|above)\s+instructions[.:!,]?\s*(.{1,240})",
                           re.IGNORECASE | re.DOTALL)


def injected_instruction(media: list[MediaFacts]) -> str | None:
    """The instruction a prompt injection in the media's text gives ("ignore all previous instructions. X"):
    the text after it, or None. Only text the emulator can read counts (text files, a PDF's first page)."""
    for f in media:
        m = _INJECTION_RE.search(f.text or "")
        if m:
            return " ".join(m.group(1).split())[:200] or None
    return None


def obey_injection(scene: Scene, instruction: str) -> Scene:
    """A scene whose every headline field is the injected instruction: a model that fell for it."""
    words = [w.lower() for w in _WORD_RE.findall(instruction)]
    return Scene(scene.kind, instruction, instruction, instruction, [instruction] + scene.tags[:3],
                 [instruction], scene.colours, words + scene.words, scene.brightness, scene.width, scene.height,
                 scene.duration_s, scene.pages, scene.digest)


def plain_text(scene: Scene) -> str:
    return f"{scene.caption}. {scene.details}"


# ---------------------------------------------------------------------------------------------
# Schema filling
# ---------------------------------------------------------------------------------------------

def _g(schema: dict, *names: str, default: Any = None) -> Any:
    for n in names:
        if n in schema:
            return schema[n]
    return default


def _camel_snake(name: str) -> tuple[str, str]:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    parts = snake.split("_")
    camel = parts[0] + "".join(p.capitalize() for p in parts[1:])
    return camel, snake


def _get(schema: dict, name: str, default: Any = None) -> Any:
    camel, snake = _camel_snake(name)
    return _g(schema, camel, snake, default=default)


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


class SchemaFiller:
    """Generates a JSON value that validates against a Gemini schema or a JSON Schema."""

    MAX_DEPTH = 8

    def __init__(self, scene: Scene, root: dict) -> None:
        self.scene = scene
        self.root = root if isinstance(root, dict) else {}

    # -- schema plumbing --
    def _resolve(self, schema: Any, seen: int = 0) -> dict:
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#") and seen < 32:
            node: Any = self.root
            for part in ref.lstrip("#").strip("/").split("/"):
                if not part:
                    continue
                part = part.replace("~1", "/").replace("~0", "~")
                node = node.get(part, {}) if isinstance(node, dict) else {}
            merged = dict(self._resolve(node, seen + 1))
            merged.update({k: v for k, v in schema.items() if k != "$ref"})
            return merged
        return schema

    def _type_of(self, s: dict) -> str | None:
        t = s.get("type")
        if isinstance(t, list):
            non_null = [x for x in t if str(x).lower() != "null"]
            t = non_null[0] if non_null else "null"
        if t is None:
            if "properties" in s:
                return "object"
            if "items" in s or "prefixItems" in s:
                return "array"
            if "enum" in s:
                vals = s["enum"]
                if vals and all(isinstance(v, bool) for v in vals):
                    return "boolean"
                if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                    return "integer"
                return "string"
            return None
        return str(t).lower()

    # -- entry --
    def fill(self, schema: Any, name: str = "", depth: int = 0) -> Any:
        s = self._resolve(schema)
        if not s:
            return self._untyped(name)
        if "const" in s:
            return s["const"]
        for key in ("anyOf", "any_of", "oneOf", "one_of"):
            opts = s.get(key)
            if isinstance(opts, list) and opts:
                resolved = [self._resolve(o) for o in opts]
                non_null = [o for o in resolved if self._type_of(o) != "null"]
                pick = non_null[0] if non_null else resolved[0]
                base = {k: v for k, v in s.items() if k not in (key,)}
                merged = dict(base)
                merged.update(pick)
                return self.fill(merged, name, depth)
        all_of = _g(s, "allOf", "all_of")
        if isinstance(all_of, list) and all_of:
            merged = {k: v for k, v in s.items() if k not in ("allOf", "all_of")}
            for part in all_of:
                p = self._resolve(part)
                for k, v in p.items():
                    if k in ("properties",) and isinstance(merged.get(k), dict):
                        merged[k] = {**merged[k], **v}
                    elif k == "required" and isinstance(merged.get(k), list):
                        merged[k] = list(dict.fromkeys(merged[k] + list(v)))
                    else:
                        merged.setdefault(k, v)
            return self.fill(merged, name, depth)
        enum = s.get("enum")
        if isinstance(enum, list) and enum:
            return self._enum(enum, name)
        t = self._type_of(s)
        if t == "object":
            return self._object(s, depth)
        if t == "array":
            return self._array(s, name, depth)
        if t == "string":
            return self._string(s, name)
        if t == "integer":
            return self._integer(s, name)
        if t == "number":
            return self._number(s, name)
        if t == "boolean":
            return self._boolean(name)
        if t == "null":
            return None
        return self._untyped(name)

    def _untyped(self, name: str) -> Any:
        return self._string({}, name)

    # -- containers --
    def _object(self, s: dict, depth: int) -> dict:
        props = s.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        order = _get(s, "propertyOrdering") or []
        names = [n for n in order if n in props] + [n for n in props if n not in order]
        required = set(s.get("required") or [])
        out: dict[str, Any] = {}
        for n in names:
            if depth >= self.MAX_DEPTH and n not in required:
                continue
            out[n] = self.fill(props[n], n, depth + 1)
        return out

    def _array(self, s: dict, name: str, depth: int) -> list:
        items = s.get("items")
        lo = int(_get(s, "minItems", 0) or 0)
        hi_raw = _get(s, "maxItems")
        hi = int(hi_raw) if hi_raw is not None else None
        prefix = s.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            vals = [self.fill(p, name, depth + 1) for p in prefix]
            return vals[: hi] if hi is not None else vals
        if depth >= self.MAX_DEPTH:
            n = lo
            return [self.fill(items, name, depth + 1) for _ in range(n)]
        it = self._resolve(items)
        it_type = self._type_of(it) if it else "string"
        if it_type == "string" and not it.get("enum") and not _g(it, "anyOf", "any_of", "oneOf", "one_of"):
            words = self._word_list(name)
            vals: list[Any] = list(dict.fromkeys(words))
            filler = [f"{name or 'item'}{i}" for i in range(1, 100)]
            while len(vals) < lo:
                vals.append(filler[len(vals)])
            if hi is not None:
                vals = vals[:hi]
            vals = [self._fit_string(it, v) for v in vals]
            return vals
        n = max(lo, 1 if it_type in ("object", "array") else 2)
        if it.get("enum"):
            n = max(lo, 1)
        if hi is not None:
            n = min(n, hi)
        singular = name[:-1] if name.endswith("s") else name
        vals = [self.fill(items, singular, depth + 1) for _ in range(n)]
        if it.get("enum") and _get(s, "uniqueItems"):
            vals = list(dict.fromkeys(vals))
        return vals

    # -- scalars --
    def _word_list(self, name: str) -> list[str]:
        n = _norm_name(name)
        sc = self.scene
        if any(k in n for k in ("colour", "color")):
            return list(sc.colours) or [sc.tags[0] if sc.tags else "gray"]
        if any(k in n for k in ("object", "entit", "thing", "item", "subject", "people", "animal", "element",
                                "person", "noun")):
            return list(sc.objects)
        if any(k in n for k in ("word", "first")):
            return list(sc.words[:5]) or list(sc.tags)
        return list(sc.tags)

    def _fit_string(self, s: dict, v: str) -> str:
        lo = int(_get(s, "minLength", 0) or 0)
        hi = _get(s, "maxLength")
        if hi is not None:
            v = v[: int(hi)]
        if len(v) < lo:
            v = v + "." * (lo - len(v))
        return v

    def _string(self, s: dict, name: str) -> str:
        fmt = str(s.get("format") or "").lower()
        sc = self.scene
        if fmt == "date-time":
            return self._fit_string(s, "2024-01-01T00:00:00Z")
        if fmt == "date":
            return self._fit_string(s, "2024-01-01")
        if fmt == "time":
            return self._fit_string(s, "12:00:00")
        if fmt == "email":
            return self._fit_string(s, "someone@example.com")
        if fmt in ("uri", "url"):
            return self._fit_string(s, "https://example.com/")
        if fmt == "uuid":
            d = sc.digest.ljust(32, "0")
            return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:32]}"
        n = _norm_name(name)
        if any(k in n for k in ("caption", "alt")):
            v = sc.caption
        elif any(k in n for k in ("description", "summary", "text", "transcript", "content", "detail",
                                  "explanation", "reason", "analysis", "note", "comment", "narrative", "body")):
            v = f"{sc.caption}. {sc.details}"
        elif any(k in n for k in ("title", "headline", "name", "label", "subject")):
            v = sc.title
        elif n in ("lang", "language", "locale"):
            v = "en"
        elif "colour" in n or "color" in n:
            v = (sc.colours or ["gray"])[0]
        elif any(k in n for k in ("mood", "tone", "sentiment", "emotion")):
            v = "calm" if (sc.brightness is None or sc.brightness >= 0.45) else "moody"
        elif any(k in n for k in ("setting", "scene", "location", "place", "environment")):
            v = "outdoors" if (sc.brightness or 0) >= 0.5 else "indoors"
        elif any(k in n for k in ("type", "kind", "category", "genre", "medium", "format")):
            v = sc.kind
        elif any(k in n for k in ("orientation",)):
            v = next((w for w in sc.words if w in ("landscape", "portrait", "square")), "unknown")
        elif any(k in n for k in ("url", "uri", "link")):
            v = "https://example.com/"
        elif n in ("id", "key", "uid", "hash") or n.endswith("id"):
            v = sc.digest[:12] or "id0"
        elif any(k in n for k in ("tag", "keyword")):
            v = ", ".join(sc.tags)
        else:
            v = sc.caption
        return self._fit_string(s, v)

    def _bounds(self, s: dict, v: float, integer: bool) -> float:
        lo = _get(s, "minimum")
        hi = _get(s, "maximum")
        xlo = s.get("exclusiveMinimum")
        xhi = s.get("exclusiveMaximum")
        step = 1 if integer else 1e-6
        if isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
            lo = xlo + step if lo is None else max(lo, xlo + step)
        if isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
            hi = xhi - step if hi is None else min(hi, xhi - step)
        if lo is not None:
            try:
                v = max(v, float(lo))
            except (TypeError, ValueError):
                pass
        if hi is not None:
            try:
                v = min(v, float(hi))
            except (TypeError, ValueError):
                pass
        return v

    def _integer(self, s: dict, name: str) -> int:
        n = _norm_name(name)
        sc = self.scene
        if "page" in n:
            v = sc.pages or 1
        elif "width" in n:
            v = sc.width or 0
        elif "height" in n:
            v = sc.height or 0
        elif any(k in n for k in ("duration", "second", "length")):
            v = round(sc.duration_s or 0)
        elif "year" in n:
            v = 2024
        elif any(k in n for k in ("rating", "score", "quality", "star")):
            v = 3 + sc.h(n, 3)
        elif "age" in n:
            v = 30
        elif any(k in n for k in ("count", "number", "num", "total", "people", "person", "faces", "objects")):
            v = max(1, len(sc.objects)) if "object" in n else 1 + sc.h(n, 4)
        else:
            v = 1 + sc.h(n, 5)
        v = self._bounds(s, v, True)
        return int(math.ceil(v))

    def _number(self, s: dict, name: str) -> float:
        n = _norm_name(name)
        sc = self.scene
        if any(k in n for k in ("confidence", "probability", "score", "certainty")):
            v = round(0.5 + sc.h(n, 50) / 100.0, 2)
        elif any(k in n for k in ("duration", "second", "length")):
            v = round(sc.duration_s or 0.0, 3)
        elif "bright" in n:
            v = round(sc.brightness if sc.brightness is not None else 0.5, 3)
        elif "page" in n:
            v = float(sc.pages or 1)
        elif "width" in n:
            v = float(sc.width or 0)
        elif "height" in n:
            v = float(sc.height or 0)
        else:
            v = 0.5
        return float(self._bounds(s, v, False))

    def _boolean(self, name: str) -> bool:
        n = _norm_name(name)
        sc = self.scene
        if "dark" in n:
            return (sc.brightness or 0.5) < 0.35
        if "bright" in n:
            return (sc.brightness or 0.0) >= 0.6
        if any(k in n for k in ("color", "colour")):
            return bool(sc.colours) and sc.colours[0] not in ("gray", "black", "white")
        return False

    def _enum(self, enum: list, name: str) -> Any:
        words = [w.lower() for w in self.scene.words] + [self.scene.kind]
        strs = [(v, str(v).lower()) for v in enum]
        for w in words:
            for v, lv in strs:
                if lv == w:
                    return v
        for w in words:
            for v, lv in strs:
                if w and (w in lv or lv in w) and len(lv) > 2:
                    return v
        return enum[self.scene.h(name, len(enum))]


def fill_schema(schema: Any, scene: Scene) -> Any:
    return SchemaFiller(scene, schema if isinstance(schema, dict) else {}).fill(schema)


def default_json(scene: Scene) -> dict:
    """JSON answer for response_mime_type=application/json without a schema."""
    return {"caption": scene.caption, "description": f"{scene.caption}. {scene.details}", "tags": scene.tags}
