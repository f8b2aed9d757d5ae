"""XMP sidecars for photo managers (digiKam, darktable, Lightroom, Immich): build, merge, write atomically.

A sidecar is an XMP packet in a file beside the photo: `IMG_0001.JPG.xmp` (digiKam, darktable, Immich) or
`IMG_0001.xmp` (Lightroom, Capture One). The photo itself is never opened for writing.

Fields written (the Metadata Working Group mapping every manager reads):
    dc:description                       language alternative, x-default: the long description (else caption)
    dc:title                             language alternative, x-default, where the row has a title
    dc:subject                           bag of keywords (tags)
    lr:hierarchicalSubject               bag of `Parent|tag`, only with a parent keyword
    digiKam:TagsList                     the keywords again (`Parent/tag` with a parent keyword): digiKam reads
                                         it first, and Immich reads tags from it, not from dc:subject
    Iptc4xmpCore:AltTextAccessibility    language alternative, x-default: the short caption
Provenance, in enrich's own namespace (prefix `enrich`): model, enrichmentVersion, contentHash, writtenAt,
and `wrote`: one `property sha256:<digest>` entry per value enrich wrote, which is how a later export knows
that a value is still the one enrich wrote (a person who edits it makes it theirs).

Merging keeps every other element, attribute, namespace, comment and processing instruction of an existing
sidecar (darktable's history stack, ratings, colour labels, face regions, Lightroom's develop settings).
Overwrite policy for a value that is already there:
    never   write only what is absent
    ours    (default) also replace values enrich wrote before and nobody changed since
    always  also replace values a person wrote
Keyword bags are shared: keywords a person added are kept under every policy; under `ours`/`always` the
keywords enrich added before are replaced by the new ones, under `never` an existing bag is left alone.

Parsing an existing sidecar refuses DTDs (no entities, so no entity expansion attacks and no external
fetches) and uses lxml with entity resolution and network access off.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from lxml import etree

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "enrich": "urn:enrich:xmp:1.0/",
}
ENRICH_NS = NS["enrich"]
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
RDF = "{%s}" % NS["rdf"]

POLICIES = ("never", "ours", "always")
SIDECAR_NAMES = ("full", "stem")
DEFAULT_POLICY = "ours"
DEFAULT_SIDECAR_NAME = "full"
# Parent keyword for lr:hierarchicalSubject (`Parent|tag`); None writes no hierarchy. A command flag for now
# (`enrich export xmp --hierarchy-parent NAME`); a setting once settings gain an [export] table.
DEFAULT_HIERARCHY_PARENT: str | None = None
MAX_SIDECAR_BYTES = 32 * 1024 * 1024

# The language-alternative properties enrich writes: (prefix, local name)
ALT_PROPS = (("dc", "description"), ("dc", "title"), ("Iptc4xmpCore", "AltTextAccessibility"))
BAG_PROPS = (("dc", "subject"), ("lr", "hierarchicalSubject"), ("digiKam", "TagsList"))
SEQ_PROPS = {("digiKam", "TagsList")}  # an ordered list where its owner defines it so; the others are bags
PROVENANCE = ("model", "enrichmentVersion", "contentHash")

TEMP_PREFIX_MARK = ".enrich-"  # temp files: .<sidecar name>.enrich-XXXX.tmp in the sidecar's folder


class SidecarError(Exception):
    """An existing sidecar that cannot be merged safely (unparseable, a DTD, not XMP); it is left untouched."""


# --- what to write ------------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    seen: set[str] = set()
    for v in value:
        s = _text(v)
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


@dataclass
class SidecarFields:
    """The values enrich wants in one sidecar. None / [] means: enrich has nothing for that property."""

    description: str | None = None
    title: str | None = None
    alt_text: str | None = None
    subjects: list[str] = field(default_factory=list)
    hierarchical: list[str] = field(default_factory=list)
    tags_list: list[str] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)

    def alts(self) -> dict[tuple[str, str], str | None]:
        return {("dc", "description"): self.description, ("dc", "title"): self.title,
                ("Iptc4xmpCore", "AltTextAccessibility"): self.alt_text}

    def bags(self) -> dict[tuple[str, str], list[str]]:
        return {("dc", "subject"): self.subjects, ("lr", "hierarchicalSubject"): self.hierarchical,
                ("digiKam", "TagsList"): self.tags_list}

    def empty(self) -> bool:
        return not any(self.alts().values()) and not self.subjects


def fields_from_row(row: Mapping[str, Any], hierarchy_parent: str | None = DEFAULT_HIERARCHY_PARENT) -> SidecarFields:
    """Map a warehouse row to sidecar values, reading whichever description columns the row has.

    description <- description, else caption, else summary; alt text <- caption, else description;
    title <- title; keywords <- tags. A row from a future profile with other columns maps the same way as
    long as it names them like these (the profile would pick the row; this reads it).
    """
    caption = _text(row.get("caption"))
    long_text = _text(row.get("description")) or caption or _text(row.get("summary"))
    alt = caption or _text(row.get("description"))
    subjects = _list(row.get("tags"))
    parent = _text(hierarchy_parent)
    hierarchical = [f"{parent}|{t.replace('|', '/')}" for t in subjects] if parent else []
    # digiKam's own tag list (digiKam reads it first; Immich reads tags only from it, lr:hierarchicalSubject
    # or IPTC keywords, not dc:subject); '/' separates levels there
    tags_list = [f"{parent.replace('/', '|')}/{t.replace('/', '|')}" for t in subjects] if parent else subjects
    prov = {k: str(row[c]) for k, c in (("model", "model"), ("enrichmentVersion", "enrichment_version"),
                                         ("contentHash", "content_hash")) if row.get(c)}
    return SidecarFields(description=long_text, title=_text(row.get("title")), alt_text=alt,
                         subjects=subjects, hierarchical=hierarchical, tags_list=tags_list, provenance=prov)


def sidecar_path(photo: str | Path, naming: str = DEFAULT_SIDECAR_NAME) -> Path:
    """`photo.jpg.xmp` (naming 'full': digiKam, darktable, Immich) or `photo.xmp` ('stem': Lightroom)."""
    p = Path(photo)
    if naming == "full":
        return p.with_name(p.name + ".xmp")
    if naming == "stem":
        return p.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar naming {naming!r}; expected one of {SIDECAR_NAMES}")


# --- parsing ------------------------------------------------------------------------------------------------
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_blank_text=False, strip_cdata=False)


def parse_sidecar(data: bytes) -> etree._ElementTree:
    """Parse an existing sidecar safely; SidecarError if it is not a well-formed XMP packet without a DTD."""
    if _DTD.search(data):
        raise SidecarError("has a DTD or entity declarations (refused: XMP never needs one)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise SidecarError(f"not well-formed XML: {exc}") from None
    tree = root.getroottree()
    if root.tag == RDF + "RDF":
        rdf = root
    else:
        rdf = root.find(RDF + "RDF")
    if rdf is None:
        raise SidecarError(f"no rdf:RDF element (root is {root.tag})")
    return tree


_TEMPLATE = ("""<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="enrich">
 <rdf:RDF xmlns:rdf="%(rdf)s">
  <rdf:Description rdf:about=""
    xmlns:dc="%(dc)s"
    xmlns:lr="%(lr)s"
    xmlns:Iptc4xmpCore="%(Iptc4xmpCore)s"
    xmlns:digiKam="%(digiKam)s"
    xmlns:enrich="%(enrich)s">
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>""" % NS).encode()


def _new_tree() -> etree._ElementTree:
    return etree.fromstring(_TEMPLATE, _parser()).getroottree()


def _rdf(tree: etree._ElementTree) -> etree._Element:
    root = tree.getroot()
    return root if root.tag == RDF + "RDF" else root.find(RDF + "RDF")


def _descriptions(tree: etree._ElementTree) -> list[etree._Element]:
    return _rdf(tree).findall(RDF + "Description")


def _qn(prefix: str, local: str) -> str:
    return "{%s}%s" % (NS[prefix], local)


def _find_prop(tree: etree._ElementTree, prefix: str, local: str) -> etree._Element | None:
    for d in _descriptions(tree):
        el = d.find(_qn(prefix, local))
        if el is not None:
            return el
    return None


def _read_simple(tree: etree._ElementTree, prefix: str, local: str) -> str | None:
    """A simple property, written as an element or (as exiv2 often does) as an attribute."""
    q = _qn(prefix, local)
    for d in _descriptions(tree):
        if q in d.attrib:
            return d.attrib[q]
        el = d.find(q)
        if el is not None:
            return (el.text or "").strip()
    return None


def _read_alt(tree: etree._ElementTree, prefix: str, local: str) -> str | None:
    """The x-default (else first) item of a language alternative; a plain text value also counts."""
    el = _find_prop(tree, prefix, local)
    if el is None:
        for d in _descriptions(tree):
            if _qn(prefix, local) in d.attrib:
                return d.attrib[_qn(prefix, local)]
        return None
    items = el.findall(f"{RDF}Alt/{RDF}li") or el.findall(f"{RDF}Bag/{RDF}li") or el.findall(f"{RDF}Seq/{RDF}li")
    if not items:
        return (el.text or "").strip() or None
    for li in items:
        if li.get(XML_LANG) == "x-default":
            return li.text or ""
    return items[0].text or ""


def _read_bag(tree: etree._ElementTree, prefix: str, local: str) -> list[str] | None:
    el = _find_prop(tree, prefix, local)
    if el is None:
        return None
    items = el.findall(f"{RDF}Bag/{RDF}li") or el.findall(f"{RDF}Seq/{RDF}li")
    if not items and (el.text or "").strip():
        return [el.text.strip()]
    return [li.text or "" for li in items]


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


def _read_wrote(tree: etree._ElementTree) -> dict[str, str]:
    """What enrich recorded writing: property -> digest of the value (for bags: digest per keyword)."""
    entries = _read_bag(tree, "enrich", "wrote") or []
    out: dict[str, str] = {}
    for e in entries:
        prop, _, digest = e.partition(" ")
        if prop and digest:
            out[prop] = (out[prop] + " " + digest) if prop in out else digest
    return out


# --- writing into the tree ----------------------------------------------------------------------------------
def _remove_prop(tree: etree._ElementTree, prefix: str, local: str) -> None:
    q = _qn(prefix, local)
    for d in _descriptions(tree):
        if q in d.attrib:
            del d.attrib[q]
        for el in d.findall(q):
            _remove_keep_tail(el)


def _remove_keep_tail(el: etree._Element) -> None:
    parent, prev = el.getparent(), el.getprevious()
    if prev is not None:
        prev.tail = el.tail  # the whitespace before the next sibling (or the closing tag) stays
    parent.remove(el)


def _target(tree: etree._ElementTree, prefix: str, local: str) -> etree._Element:
    """The rdf:Description to put a property in: the one that has it, else the first."""
    el = _find_prop(tree, prefix, local)
    if el is not None:
        return el.getparent()
    descs = _descriptions(tree)
    if descs:
        return descs[0]
    d = etree.SubElement(_rdf(tree), RDF + "Description")
    d.set(RDF + "about", "")
    return d


def _depth(el: etree._Element) -> int:
    return sum(1 for _ in el.iterancestors())


def _sub(parent: etree._Element, qname: str, prefix: str | None = None) -> etree._Element:
    """A new last child, indented like its siblings; declares the namespace only where it is not in scope."""
    nsmap = None
    if prefix is not None and NS[prefix] not in parent.nsmap.values():
        nsmap = {prefix if prefix not in parent.nsmap else f"{prefix}1": NS[prefix]}
    indent = "\n" + " " * (_depth(parent) + 1)
    closing = "\n" + " " * _depth(parent)
    if len(parent):
        last = parent[-1]
        tail = last.tail if last.tail is not None and not last.tail.strip() else closing
        if parent.text is not None and not parent.text.strip():
            indent = parent.text
        last.tail = indent
    else:
        parent.text = indent
        tail = closing
    child = etree.SubElement(parent, qname, nsmap=nsmap) if nsmap else etree.SubElement(parent, qname)
    child.tail = tail
    return child


def _container(parent: etree._Element, tag: str, items: list[tuple[str, str | None]], prefix: str,
               local: str) -> None:
    prop = _sub(parent, _qn(prefix, local), prefix)
    cont = _sub(prop, RDF + tag)
    for text, lang in items:
        li = _sub(cont, RDF + "li")
        if lang:
            li.set(XML_LANG, lang)
        li.text = text


def _set_alt(tree: etree._ElementTree, prefix: str, local: str, value: str) -> None:
    """Set the x-default item of a language alternative, keeping the other languages."""
    el = _find_prop(tree, prefix, local)
    alt = el.find(RDF + "Alt") if el is not None else None
    if alt is not None:
        items = alt.findall(RDF + "li")
        for li in items:
            if li.get(XML_LANG) == "x-default":
                li.text = value
                return
        li = etree.SubElement(alt, RDF + "li")
        li.set(XML_LANG, "x-default")
        li.text = value
        alt.remove(li)
        alt.insert(0, li)  # x-default first, as the XMP specification asks
        li.tail = alt.text if alt.text is not None and not alt.text.strip() else None
        return
    parent = _target(tree, prefix, local)
    _remove_prop(tree, prefix, local)
    _container(parent, "Alt", [(value, "x-default")], prefix, local)


def _set_bag(tree: etree._ElementTree, prefix: str, local: str, values: list[str]) -> None:
    parent = _target(tree, prefix, local)
    _remove_prop(tree, prefix, local)
    if values:
        kind = "Seq" if (prefix, local) in SEQ_PROPS else "Bag"
        _container(parent, kind, [(v, None) for v in values], prefix, local)


def _set_simple(tree: etree._ElementTree, prefix: str, local: str, value: str) -> None:
    parent = _target(tree, prefix, local)
    _remove_prop(tree, prefix, local)
    _sub(parent, _qn(prefix, local), prefix).text = value


# --- the merge ----------------------------------------------------------------------------------------------
@dataclass
class MergeResult:
    changed: list[str] = field(default_factory=list)   # properties whose value enrich sets or changes
    kept: list[str] = field(default_factory=list)      # properties left alone because a person wrote them


def merge(tree: etree._ElementTree, fields: SidecarFields, policy: str = DEFAULT_POLICY,
          now: datetime | None = None) -> MergeResult:
    """Merge `fields` into `tree` in place under `policy`. Provenance is updated only when something changed
    (so an export with nothing new leaves the sidecar byte-for-byte as it was)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown overwrite policy {policy!r}; expected one of {POLICIES}")
    wrote = _read_wrote(tree)
    result = MergeResult()
    new_wrote: dict[str, list[str]] = {}

    for (prefix, local), value in fields.alts().items():
        key = f"{prefix}:{local}"
        current = _read_alt(tree, prefix, local)
        ours_before = current is not None and wrote.get(key) == _digest(current)
        if ours_before:
            new_wrote[key] = [wrote[key]]  # stays recorded as ours unless replaced below
        if value is None or current == value:
            continue  # nothing new, or already there (a person's identical text stays theirs)
        if current is None or not current.strip() or policy == "always" or (policy == "ours" and ours_before):
            _set_alt(tree, prefix, local, value)
            new_wrote[key] = [_digest(value)]
            result.changed.append(key)
        else:
            result.kept.append(key)

    for (prefix, local), values in fields.bags().items():
        key = f"{prefix}:{local}"
        current = _read_bag(tree, prefix, local)
        previous_ours = set((wrote.get(key) or "").split())
        if not values and not previous_ours:
            continue
        if current and policy == "never":
            if previous_ours:
                new_wrote[key] = sorted(previous_ours)
            if values:
                result.kept.append(key)
            continue
        people = [v for v in (current or []) if _digest(v) not in previous_ours]
        folded = {v.casefold() for v in people}
        mine = [v for v in values if v.casefold() not in folded]
        merged = people + mine
        if merged != (current or []):
            _set_bag(tree, prefix, local, merged)
            result.changed.append(key)
        if mine:
            new_wrote[key] = sorted(_digest(v) for v in mine)

    prov_now = {k: _read_simple(tree, "enrich", k) for k in PROVENANCE}
    wrote_entries = sorted(f"{k} {d}" for k, ds in new_wrote.items() for d in ds)
    stored = sorted(_read_bag(tree, "enrich", "wrote") or [])
    prov_differs = any(prov_now.get(k) != v for k, v in fields.provenance.items())
    if result.changed or wrote_entries != stored or (wrote_entries and prov_differs):
        for k in PROVENANCE:
            if k in fields.provenance:
                _set_simple(tree, "enrich", k, fields.provenance[k])
        stamp = (now or datetime.now(timezone.utc)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        _set_simple(tree, "enrich", "writtenAt", stamp)
        _set_bag(tree, "enrich", "wrote", wrote_entries)
        if not result.changed:
            result.changed.append("enrich:provenance")
    return result


def _hoist_namespaces(tree: etree._ElementTree) -> None:
    """Declare enrich's namespaces once on each rdf:Description instead of on every property written (as
    digiKam and exiv2 lay sidecars out). Declarations already there, used or not, are kept."""
    keep = sorted({p for el in tree.iter() if isinstance(el.tag, str) for p in el.nsmap if p})
    for desc in _descriptions(tree):
        used = {el.tag.split("}")[0][1:] for el in desc.iter() if isinstance(el.tag, str) and el.tag[0] == "{"}
        top = {p: u for p, u in NS.items() if u in used and desc.nsmap.get(p, u) == u}
        etree.cleanup_namespaces(desc, top_nsmap=top, keep_ns_prefixes=keep)


def serialize(tree: etree._ElementTree) -> bytes:
    """UTF-8 with a declaration; processing instructions and comments around the root (an xpacket wrapper)
    are kept, each on its own line."""
    _hoist_namespaces(tree)
    root = tree.getroot()
    before, after = [], []
    node = root.getprevious()
    while node is not None:
        before.insert(0, node)
        node = node.getprevious()
    node = root.getnext()
    while node is not None:
        after.append(node)
        node = node.getnext()
    parts = [b'<?xml version="1.0" encoding="UTF-8"?>']
    parts += [etree.tostring(n, encoding="UTF-8", with_tail=False) for n in before]
    parts.append(etree.tostring(root, encoding="UTF-8", with_tail=False))
    parts += [etree.tostring(n, encoding="UTF-8", with_tail=False) for n in after]
    return b"\n".join(parts) + b"\n"


# --- writing files ------------------------------------------------------------------------------------------
def atomic_write(dest: Path, data: bytes, like: os.stat_result | None = None) -> None:
    """Write `data` to `dest` by a temp file in the same folder, fsync, then os.replace: a reader (or a kill
    at any moment) sees the old sidecar or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}{TEMP_PREFIX_MARK}", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if like is not None:
            os.chmod(tmp, like.st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # No directory fsync per sidecar (it doubled the cost): the rename is atomic for readers and against a
    # kill; after a power cut a sidecar may be the old one, never a torn one (its data was fsynced first).


def remove_stale_temps(folder: Path) -> int:
    """Remove temp files a killed export left in `folder` (only enrich's own: `.<name>.enrich-*.tmp`)."""
    removed = 0
    try:
        for p in folder.glob(f".*.xmp{TEMP_PREFIX_MARK}*.tmp"):
            p.unlink(missing_ok=True)
            removed += 1
    except OSError:
        pass
    return removed


@dataclass
class SidecarOutcome:
    photo: str
    sidecar: str
    action: str  # create | update | unchanged | kept | unparseable | missing | conflict | nothing | error
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    reason: str | None = None


def export_one(photo: str | Path, fields: SidecarFields, *, naming: str = DEFAULT_SIDECAR_NAME,
               policy: str = DEFAULT_POLICY, dry_run: bool = False, now: datetime | None = None) -> SidecarOutcome:
    """Create or merge the sidecar of one photo. Never opens the photo itself."""
    photo = Path(photo)
    dest = sidecar_path(photo, naming)
    out = SidecarOutcome(str(photo), str(dest), "unchanged")
    if dest.resolve() == photo.resolve():
        out.action, out.reason = "error", "the sidecar path is the photo itself"
        return out
    if not photo.exists():
        out.action, out.reason = "missing", "the photo is not there any more"
        return out
    if fields.empty():
        out.action, out.reason = "nothing", "no description to write"
        return out
    like = None
    try:
        st = dest.stat()
    except FileNotFoundError:
        tree, existed, old = _new_tree(), False, None
    else:
        like = st
        if st.st_size > MAX_SIDECAR_BYTES:
            out.action, out.reason = "unparseable", f"larger than {MAX_SIDECAR_BYTES} bytes"
            return out
        old = dest.read_bytes()
        try:
            tree = parse_sidecar(old)
        except SidecarError as exc:
            out.action, out.reason = "unparseable", str(exc)
            return out
        existed = True
    res = merge(tree, fields, policy, now=now)
    out.changed, out.kept = res.changed, res.kept
    if not res.changed:
        out.action = "kept" if res.kept else "unchanged"
        return out
    data = serialize(tree)
    if existed and data == old:
        out.action = "unchanged"
        return out
    out.action = "update" if existed else "create"
    if not dry_run:
        atomic_write(dest, data, like)
    return out


def choose_rows(rows: Iterable[Mapping[str, Any]], naming: str) -> tuple[list[Mapping[str, Any]], list[tuple[Mapping[str, Any], str]]]:
    """One row per sidecar. With stem naming a RAW+JPEG pair shares `IMG_0001.xmp`: the non-JPEG (the RAW,
    which Lightroom attaches the sidecar to) wins; the others are returned as conflicts."""
    by_sidecar: dict[Path, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_sidecar.setdefault(sidecar_path(r["path"], naming), []).append(r)
    chosen, conflicts = [], []
    for sc, group in by_sidecar.items():
        group.sort(key=lambda r: ((r.get("mime") or "") == "image/jpeg", r["path"]))
        chosen.append(group[0])
        conflicts += [(r, group[0]["path"]) for r in group[1:]]
    return chosen, conflicts
