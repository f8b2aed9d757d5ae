"""`enrich export xmp`: sidecars read back by exiv2 (pyexiv2, the library digiKam and darktable use), merged
into darktable- and Lightroom-style sidecars without losing their content, people's values kept, atomic."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyexiv2
import pytest

from enrich.cli import main as cli
from enrich.tasks import xmp_sidecar as xs
from enrich.warehouse.store import Warehouse

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)

DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:darktable="http://darktable.sf.net/"
   exif:DateTimeOriginal="2023:07:01 10:00:00"
   xmp:Rating="4"
   xmpMM:DerivedFrom="IMG_0001.JPG"
   darktable:import_timestamp="63836000000000000"
   darktable:xmp_version="5"
   darktable:raw_params="0"
   darktable:auto_presets_applied="1"
   darktable:history_end="2">
   <darktable:colorlabels>
    <rdf:Seq>
     <rdf:li>1</rdf:li>
    </rdf:Seq>
   </darktable:colorlabels>
   <darktable:masks_history>
    <rdf:Seq/>
   </darktable:masks_history>
   <darktable:history>
    <rdf:Seq>
     <rdf:li
      darktable:num="0"
      darktable:operation="exposure"
      darktable:enabled="1"
      darktable:modversion="6"
      darktable:params="0000000000000000cdcc4c3e"
      darktable:multi_name=""
      darktable:multi_priority="0"
      darktable:blendop_version="13"
      darktable:blendop_params="gz11eJxjYIAACQYYOOHEgAZY"/>
     <rdf:li
      darktable:num="1"
      darktable:operation="colorbalancergb"
      darktable:enabled="1"
      darktable:modversion="5"
      darktable:params="9a99193e0000000000000000"
      darktable:multi_name=""
      darktable:multi_priority="0"
      darktable:blendop_version="13"
      darktable:blendop_params="gz11eJxjYIAACQYYOOHEgAZY"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""

LIGHTROOM = """<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000, 0000/00/00-00:00:00">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
   xmp:Rating="5"
   xmp:Label="Red"
   photoshop:DateCreated="2023-07-01T10:00:00"
   crs:Version="15.0"
   crs:ProcessVersion="11.0"
   crs:WhiteBalance="As Shot"
   crs:Exposure2012="+0.35"
   crs:Contrast2012="+12"
   crs:HasSettings="True">
   <crs:ToneCurvePV2012>
    <rdf:Seq>
     <rdf:li>0, 0</rdf:li>
     <rdf:li>255, 255</rdf:li>
    </rdf:Seq>
   </crs:ToneCurvePV2012>
   <dc:description>
    <rdf:Alt>
     <rdf:li xml:lang="x-default">Grandma's 90th birthday, in her garden</rdf:li>
    </rdf:Alt>
   </dc:description>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>family</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:RegionList>
     <rdf:Bag>
      <rdf:li rdf:parseType="Resource">
       <mwg-rs:Name>Grandma</mwg-rs:Name>
       <mwg-rs:Type>Face</mwg-rs:Type>
       <mwg-rs:Area stArea:x="0.5" stArea:y="0.4" stArea:w="0.2" stArea:h="0.3" stArea:unit="normalized"/>
      </rdf:li>
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def make_library(root: Path, names: list[str], **columns) -> tuple[Path, list[Path]]:
    """Photos (bytes only: export never reads them) and a warehouse with one ok row for each."""
    lib = root / "library"
    lib.mkdir(parents=True, exist_ok=True)
    photos = []
    for i, name in enumerate(names):
        p = lib / name
        p.write_bytes(b"\xff\xd8\xff\xe0 fake jpeg %d \xff\xd9" % i)
        photos.append(p)
    write_rows(root / "wh", photos, run="r1", minutes=0, **columns)
    return root / "wh", photos


def write_rows(wh: Path, photos: list[Path], run: str, minutes: int, seq: int = 1, **columns) -> None:
    rows = []
    for i, p in enumerate(photos):
        row = {"run_id": run, "path": str(p), "status": "ok", "kind": "image", "mime": "image/jpeg",
               "content_hash": f"hash{i}", "model": "gemini-3-flash", "enrichment_version": "ev1",
               "finished_at": T0 + timedelta(minutes=minutes),
               "caption": f"A red bicycle number {i}",
               "description": f"A red bicycle number {i} leaning on a brick wall in Montréal.",
               "tags": ["bicycle", "red", "street"]}
        row.update({k: (v(i) if callable(v) else v) for k, v in columns.items()})
        rows.append(row)
    Warehouse(wh).write_results(rows, run, seq)


def export(wh: Path, *extra: str) -> int:
    return cli(["export", "xmp", "--warehouse", str(wh), *extra])


def read(sidecar: Path) -> dict:
    img = pyexiv2.Image(str(sidecar))
    try:
        return img.read_xmp()
    finally:
        img.close()


def snapshot(paths: list[Path]) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def test_sidecars_read_back_by_exiv2_and_originals_untouched(tmp_path, capsys):
    wh, photos = make_library(tmp_path, ["IMG_0001.JPG", "b.jpg"], title=lambda i: "Bicycle" if i == 0 else None)
    before = snapshot(photos)
    assert export(wh, "--hierarchy-parent", "AI") == 0
    assert snapshot(photos) == before  # the photos' bytes and mtimes
    xmp = read(photos[0].with_name("IMG_0001.JPG.xmp"))
    assert xmp["Xmp.dc.description"] == {'lang="x-default"': "A red bicycle number 0 leaning on a brick wall in Montréal."}
    assert xmp["Xmp.dc.title"] == {'lang="x-default"': "Bicycle"}
    assert xmp["Xmp.iptc.AltTextAccessibility"] == {'lang="x-default"': "A red bicycle number 0"}
    assert xmp["Xmp.dc.subject"] == ["bicycle", "red", "street"]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["AI|bicycle", "AI|red", "AI|street"]
    assert xmp["Xmp.digiKam.TagsList"] == ["AI/bicycle", "AI/red", "AI/street"]  # what Immich reads tags from
    assert xmp["Xmp.enrich.model"] == "gemini-3-flash"
    assert xmp["Xmp.enrich.enrichmentVersion"] == "ev1"
    assert xmp["Xmp.enrich.contentHash"] == "hash0"
    assert datetime.fromisoformat(xmp["Xmp.enrich.writtenAt"].replace("Z", "+00:00")).year >= 2026
    assert "Xmp.dc.title" not in read(tmp_path / "library" / "b.jpg.xmp")  # no title: none written
    out = capsys.readouterr().out
    assert "create" in out and "images 2" in out

    # incremental: nothing changed, nothing written (same bytes, same mtime)
    sidecars = sorted((tmp_path / "library").glob("*.xmp"))
    written = snapshot(sidecars)
    assert export(wh, "--hierarchy-parent", "AI") == 0
    assert snapshot(sidecars) == written
    assert "unchanged 2" in capsys.readouterr().out

    # stem naming (Lightroom): photo.xmp
    assert export(wh, "--sidecar-name", "stem") == 0
    assert read(tmp_path / "library" / "IMG_0001.xmp")["Xmp.dc.subject"] == ["bicycle", "red", "street"]
    assert snapshot(photos) == before


def test_darktable_sidecar_keeps_its_history_and_labels(tmp_path):
    wh, photos = make_library(tmp_path, ["IMG_0001.JPG"])
    sidecar = tmp_path / "library" / "IMG_0001.JPG.xmp"
    sidecar.write_text(DARKTABLE, encoding="utf-8")
    before = read(sidecar)
    assert before["Xmp.darktable.history[2]/darktable:operation"] == "colorbalancergb"
    assert export(wh) == 0
    after = read(sidecar)
    for key, value in before.items():
        assert after[key] == value, key  # every darktable, exif, xmp value survives as it was
    assert after["Xmp.dc.description"]['lang="x-default"'].startswith("A red bicycle number 0")
    assert after["Xmp.dc.subject"] == ["bicycle", "red", "street"]
    text = sidecar.read_text(encoding="utf-8")
    assert 'xmlns:darktable="http://darktable.sf.net/"' in text and 'darktable:blendop_params="gz11eJxjYIAACQYYOOHEgAZY"' in text


@pytest.mark.parametrize("policy", ["ours", "never"])
def test_lightroom_sidecar_and_a_person_s_description_are_kept(tmp_path, policy, capsys):
    wh, photos = make_library(tmp_path, ["IMG_0001.CR3"], mime="image/x-canon-cr3")
    sidecar = tmp_path / "library" / "IMG_0001.xmp"
    sidecar.write_text(LIGHTROOM, encoding="utf-8")
    before = read(sidecar)
    assert export(wh, "--sidecar-name", "stem", "--overwrite", policy) == 0
    after = read(sidecar)
    assert after["Xmp.dc.description"] == {'lang="x-default"': "Grandma's 90th birthday, in her garden"}
    if policy == "ours":
        # keywords are shared: the person's stays, enrich's are added; alt text was absent, so it is written
        assert after["Xmp.dc.subject"] == ["family", "bicycle", "red", "street"]
        assert after["Xmp.iptc.AltTextAccessibility"] == {'lang="x-default"': "A red bicycle number 0"}
    else:
        assert after["Xmp.dc.subject"] == ["family"]  # never: an existing bag is left alone
    for key, value in before.items():
        if key != "Xmp.dc.subject":
            assert after[key] == value, key  # crs:*, rating, label, face regions, the description
    assert "kept what a person wrote: dc:description" in capsys.readouterr().out


def test_always_replaces_a_person_s_description_but_keeps_the_rest(tmp_path):
    wh, photos = make_library(tmp_path, ["IMG_0001.CR3"])
    sidecar = tmp_path / "library" / "IMG_0001.xmp"
    sidecar.write_text(LIGHTROOM, encoding="utf-8")
    assert export(wh, "--sidecar-name", "stem", "--overwrite", "always") == 0
    after = read(sidecar)
    assert after["Xmp.dc.description"]['lang="x-default"'].startswith("A red bicycle number 0")
    assert after["Xmp.crs.Exposure2012"] == "+0.35" and after["Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Name"] == "Grandma"


def test_ours_updates_its_own_values_but_not_a_person_s_edit(tmp_path):
    wh, photos = make_library(tmp_path, ["a.jpg", "b.jpg"])
    assert export(wh) == 0
    a, b = (tmp_path / "library" / "a.jpg.xmp"), (tmp_path / "library" / "b.jpg.xmp")
    # a person edits b's description (and adds a keyword) in their photo manager
    text = b.read_text(encoding="utf-8").replace("A red bicycle number 1 leaning", "My bike, leaning")
    b.write_text(text.replace("<rdf:li>street</rdf:li>", "<rdf:li>street</rdf:li><rdf:li>mine</rdf:li>"),
                 encoding="utf-8")
    # a later run re-describes both with other words and tags
    write_rows(wh, photos, run="r2", minutes=5, description=lambda i: f"Photo {i}: a bicycle.",
               tags=["bicycle", "wall"])
    assert export(wh) == 0
    assert read(a)["Xmp.dc.description"] == {'lang="x-default"': "Photo 0: a bicycle."}
    assert read(a)["Xmp.dc.subject"] == ["bicycle", "wall"]  # enrich's old keywords replaced
    assert read(a)["Xmp.digiKam.TagsList"] == ["bicycle", "wall"]
    assert read(b)["Xmp.dc.description"]['lang="x-default"'].startswith("My bike, leaning")
    assert read(b)["Xmp.dc.subject"] == ["mine", "bicycle", "wall"]


def test_dry_run_writes_nothing(tmp_path, capsys):
    wh, photos = make_library(tmp_path, ["a.jpg", "b.jpg"])
    existing = tmp_path / "library" / "b.jpg.xmp"
    existing.write_text(DARKTABLE, encoding="utf-8")
    files_before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "library").iterdir()}
    assert export(wh, "--dry-run") == 0
    files_after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "library").iterdir()}
    assert files_after == files_before
    out = capsys.readouterr().out
    assert "would create" in out and "would update" in out and "a.jpg.xmp" in out


def test_unparseable_and_hostile_sidecars_are_left_untouched(tmp_path, capsys):
    wh, photos = make_library(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    lib = tmp_path / "library"
    bad = {
        lib / "a.jpg.xmp": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF",  # truncated
        lib / "b.jpg.xmp": b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="">&lol2;</rdf:Description></rdf:RDF></x:xmpmeta>""",
        lib / "c.jpg.xmp": b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><x>&xxe;</x>""",
    }
    for p, data in bad.items():
        p.write_bytes(data)
    before = snapshot(list(bad))
    assert export(wh) == 0
    assert snapshot(list(bad)) == before
    out = capsys.readouterr()
    refused = [line for line in out.err.splitlines() if line.startswith("unparseable")]
    assert len(refused) == 3 and sum("DTD" in line for line in refused) == 2
    assert "unparseable 3" in out.out
    assert read(lib / "d.jpg.xmp")["Xmp.dc.subject"] == ["bicycle", "red", "street"]  # the others still go


def test_raw_and_jpeg_pair_share_one_stem_sidecar(tmp_path, capsys):
    wh, photos = make_library(tmp_path, ["IMG_0001.CR3", "IMG_0001.JPG"],
                              mime=lambda i: "image/x-canon-cr3" if i == 0 else "image/jpeg")
    assert export(wh, "--sidecar-name", "stem") == 0
    assert read(tmp_path / "library" / "IMG_0001.xmp")["Xmp.enrich.contentHash"] == "hash0"  # the RAW's
    assert "conflict" in capsys.readouterr().out


def test_sigkill_during_export_leaves_no_partial_sidecar(tmp_path):
    n = 80
    wh, photos = make_library(tmp_path, [f"p{i:04d}.jpg" for i in range(n)])
    for p in photos:  # existing darktable sidecars: the kill lands while they are being replaced
        p.with_name(p.name + ".xmp").write_text(DARKTABLE, encoding="utf-8")
    env = {**os.environ, "ENRICH_WAREHOUSE": str(wh), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "enrich", "export", "xmp"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # kill it once it has printed some updates (it prints one line per sidecar written)
    seen = 0
    while seen < 10:
        line = proc.stdout.readline()
        assert line, "export ended before it could be killed"
        seen += line.startswith("update")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    sidecars = sorted((tmp_path / "library").glob("*.xmp"))
    assert len(sidecars) == n  # every sidecar is there, old or new, none half-written
    updated = 0
    for sc in sidecars:
        xmp = read(sc)
        assert xmp["Xmp.darktable.history[1]/darktable:operation"] == "exposure"
        updated += "Xmp.dc.description" in xmp
        xs.parse_sidecar(sc.read_bytes())
    assert 10 <= updated < n
    # a rerun finishes the job and removes any temp file the killed one left
    assert export(wh) == 0
    assert not list((tmp_path / "library").glob(".*.tmp"))
    assert all("Xmp.dc.description" in read(sc) for sc in sidecars)


def test_a_sidecar_rewritten_by_exiv2_is_still_recognised_as_enrich_s(tmp_path, capsys):
    """digiKam and darktable rewrite sidecars through exiv2, which moves simple properties into attributes."""
    wh, photos = make_library(tmp_path, ["a.jpg"])
    sidecar = tmp_path / "library" / "a.jpg.xmp"
    assert export(wh) == 0
    img = pyexiv2.Image(str(sidecar))
    img.modify_xmp({"Xmp.xmp.Rating": "2"})  # a person rates it in their photo manager
    img.close()
    assert 'enrich:model="gemini-3-flash"' in sidecar.read_text(encoding="utf-8")  # now an attribute
    capsys.readouterr()
    assert export(wh) == 0
    assert "unchanged 1" in capsys.readouterr().out
    write_rows(wh, photos, run="r2", minutes=5, description=lambda i: "A new description.",
               enrichment_version="ev2")
    assert export(wh) == 0
    xmp = read(sidecar)
    assert xmp["Xmp.dc.description"] == {'lang="x-default"': "A new description."}  # ours: replaced
    assert xmp["Xmp.xmp.Rating"] == "2" and xmp["Xmp.enrich.enrichmentVersion"] == "ev2"
    text = sidecar.read_text(encoding="utf-8")
    assert text.count("<enrich:model>") == 1 and 'enrich:model="' not in text  # replaced, not doubled
