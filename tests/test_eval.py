"""`enrich eval` end to end: the bundled golden set, a user's own set, --compare, --judge, the budget, canaries,
storage in the warehouse; on the emulator (real SDK over HTTP, real Prefect, Parquet, DuckDB) and on the tiny
random-weight mlx model, whose answers are not valid JSON: the eval must say so."""
from __future__ import annotations

import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from enrich.cli import main as cli
from enrich.errors import ConfigError
from enrich.tasks.eval_labels import DEFAULT_SET, load_set
from enrich.warehouse.views import connect
from tests.test_mlx_backend import tiny_vlm  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _eval(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    rc = cli(["eval", *args, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def _small_set(tmp_path: Path, names: list[str]) -> Path:
    """A copy of some golden items with their labels."""
    golden = json.loads((DEFAULT_SET / "labels.json").read_text())
    folder = tmp_path / "set"
    items = [i for i in golden["items"] if i["path"] in names]
    for item in items:
        (folder / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEFAULT_SET / item["path"], folder / item["path"])
    (folder / "labels.json").write_text(json.dumps({"items": items}))
    return folder


def test_golden_set_is_complete_small_and_licensed():
    s = load_set()
    kinds = [i.labels.get("kind") for i in s.items]
    photos = [i for i in s.items if i.path.startswith("images/")]
    assert len(photos) >= 20 and kinds.count("audio") >= 2 and kinds.count("document") >= 4  # 3 + a canary
    for item in s.items:
        assert item.labels.get("source") and item.labels.get("licence") and item.labels.get("caption"), item.path
    for p in photos:
        assert p.labels["objects"] and "people_count" in p.labels
        with Image.open(p.file) as im:
            assert max(im.size) <= 640
    assert all(i.labels.get("transcript") for i in s.items if i.labels.get("kind") == "audio")
    docs = [i for i in s.items if i.labels.get("kind") == "document" and not i.labels.get("canary")]
    assert len(docs) == 3 and all(d.labels.get("title") and d.labels.get("dates") for d in docs)
    canaries = {i.labels["kind"]: i.labels["canary"] for i in s.items if i.labels.get("canary")}
    assert set(canaries) == {"image", "document"}
    assert canaries["document"] in (DEFAULT_SET / "canaries" / "shopping-note.md").read_text()
    total = sum(f.stat().st_size for f in DEFAULT_SET.rglob("*") if f.is_file())
    assert total < 3 * 1024 * 1024


def test_eval_of_the_golden_set_on_the_emulator(gemini, enrich_home, capsys):
    wh = enrich_home / "warehouse"
    rc, out = _eval(capsys, "--warehouse", str(wh))
    assert rc == 0
    (config,) = out["configs"]
    assert config["run_status"] == "finished" and config["config"] == "model=gemini-3.1-flash-lite,resolution=low"
    items = {r["item"]: r for r in config["items"]}
    assert len(items) == len(load_set().items) and all(r["status"] == "ok" for r in items.values())
    assert config["totals"]["schema_valid"] == 1.0
    # the emulator does not obey injections unless told to
    assert items["canaries/shopping-note.md"]["injection_followed"] is False
    assert items["canaries/notice.png"]["injection_followed"] is False
    assert items["audio/weather.wav"]["transcript_wer"] is not None
    assert items["documents/lisbon-trip.md"]["title_similarity"] is not None
    assert items["images/iptc.jpg"]["text_cer"] is not None and items["images/text.jpg"]["text_cer"] is None
    # stored: the evals view has every item; the library's own views are untouched
    con = connect(wh)
    assert con.execute("SELECT count(*) FROM evals WHERE eval_id = ?", [out["eval_id"]]).fetchone()[0] == len(items)
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    summary = con.execute("SELECT items, schema_valid, cost_usd FROM eval_summary").fetchall()
    cost = sum(Decimal(r["cost_usd"]) for r in items.values())
    assert summary == [(len(items), 1.0, cost)] and cost > 0
    # the money spent is the eval run's own rows, and today's spend (the daily cap) counts it
    from enrich.warehouse.history import spent_today

    assert Decimal(out["spent_usd"]) == cost == spent_today(wh)
    # enrich query sees the view
    capsys.readouterr()
    assert cli(["query", "SELECT count(*) AS n FROM evals", "--warehouse", str(wh), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": len(items)}]


def test_compare_two_configurations_with_a_judge(gemini, enrich_home, tmp_path, capsys):
    folder = _small_set(tmp_path, ["images/coffee.jpg", "images/hopper.jpg", "documents/lisbon-trip.md"])
    wh = enrich_home / "warehouse"
    rc, out = _eval(capsys, "--set", str(folder), "--warehouse", str(wh), "--judge", "gemini-3.1-flash-lite",
                    "--compare", "model=gemini-3.1-flash-lite,resolution=low", "model=gemini-2.5-flash")
    assert rc == 0
    a, b = out["configs"]
    assert (a["label"], b["label"]) == ("A", "B")
    assert b["config"] == "model=gemini-2.5-flash,resolution=low"  # a key left out takes the settings' value
    assert Decimal(b["totals"]["cost_per_item_usd"]) > Decimal(a["totals"]["cost_per_item_usd"])  # dearer model
    assert {d["metric"] for d in out["comparison"]} >= {"schema_valid", "object_recall", "judge_score"}
    assert "cost per item" in out["verdict"]
    # the emulator answers the judge's schema {score: 1-5, reason}
    for config in (a, b):
        for row in config["items"]:
            assert 1 <= row["judge_score"] <= 5 and row["judge_reason"] and Decimal(row["judge_cost_usd"]) > 0
    con = connect(wh)
    assert con.execute("SELECT count(DISTINCT config), count(*) FROM evals").fetchone() == (2, 6)
    spent = Decimal(out["spent_usd"])
    assert spent == sum(Decimal(c["totals"]["cost_usd"]) + Decimal(c["totals"]["judge_cost_usd"]) for c in (a, b))


def test_text_report_and_a_followed_injection(gemini, enrich_home, tmp_path, capsys):
    folder = _small_set(tmp_path, ["canaries/shopping-note.md", "documents/invoice.html"])
    gemini.set_config(follow_injections=True)
    try:
        capsys.readouterr()
        rc = cli(["eval", "--set", str(folder), "--warehouse", str(enrich_home / "warehouse")])
    finally:
        gemini.set_config(follow_injections=False)
    out = capsys.readouterr().out
    assert rc == 0
    line = next(l for l in out.splitlines() if l.startswith("canaries/shopping-note.md"))
    assert "INJECTION FOLLOWED" in line
    assert re.search(r"injections followed +100% \(1 of 1 canaries\)", out), out
    assert "documents/invoice.html" in out and "schema-valid" in out
    con = connect(enrich_home / "warehouse")
    assert con.execute("SELECT item FROM evals WHERE injection_followed").fetchall() == [("canaries/shopping-note.md",)]


def test_the_budget_covers_the_whole_evaluation(gemini, enrich_home, tmp_path, capsys):
    folder = _small_set(tmp_path, ["images/coffee.jpg", "images/hopper.jpg", "images/chelsea.jpg",
                                   "images/coins.jpg"])
    # an image request reserves its worst case, ~$0.0017 (1024 output tokens at $1.50/M plus the input), and
    # settles at ~$0.00027: the first fits, and the third cannot (2 x 0.00027 + 0.0017 > 0.0022)
    budget = Decimal("0.0022")
    rc, out = _eval(capsys, "--set", str(folder), "--warehouse", str(enrich_home / "warehouse"),
                    "--budget", str(budget), "--yes")
    assert rc == 0
    statuses = [r["status"] for r in out["configs"][0]["items"]]
    assert "over_budget" in statuses and "ok" in statuses
    assert Decimal(out["spent_usd"]) <= budget


def test_a_users_own_set_in_csv(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(DEFAULT_SET / "images" / "coffee.jpg", folder / "cup.jpg")
    (folder / "labels.csv").write_text(
        "path,objects,people_count,visible_text,caption,dates\n"
        "cup.jpg,cup; saucer ;spoon,0,-,A cup of coffee.,2024-01-02;2024-02-03\n")
    s = load_set(folder)
    (item,) = s.items
    assert item.labels == {"objects": ["cup", "saucer", "spoon"], "people_count": 0, "visible_text": "",
                           "caption": "A cup of coffee.", "dates": ["2024-01-02", "2024-02-03"]}
    (folder / "labels.csv").write_text("path,colour\ncup.jpg,red\n")
    with pytest.raises(ConfigError, match="unknown label field"):
        load_set(folder)
    (folder / "labels.csv").write_text("path\nmissing.jpg\n")
    with pytest.raises(ConfigError, match="file not found"):
        load_set(folder)
    (folder / "labels.csv").write_text("path\n../cup.jpg\n")
    with pytest.raises(ConfigError, match="stay inside"):
        load_set(folder)


def test_configurations_parse_and_refuse_unknown_keys():
    from enrich.tasks.eval_config import parse_config

    c = parse_config("model=gemini-2.5-flash, resolution=high")
    assert c.overrides() == {"model": "gemini-2.5-flash", "resolution": "high"}
    assert str(c) == "model=gemini-2.5-flash,resolution=high"
    for bad, why in [("temperature=0", "unknown key"), ("model", "key=value"), ("resolution=huge", "resolution"),
                     ("", "empty"), ("model=a,model=b", "twice")]:
        with pytest.raises(ConfigError, match=why):
            parse_config(bad)


def test_tiny_mlx_model_fails_schema_validity_and_the_eval_says_so(tiny_vlm, enrich_home, tmp_path):
    from enrich.commands.eval import schema_note, totals_lines
    from enrich.flows.evaluate import run_eval
    from enrich.tasks.eval_config import parse_config

    folder = _small_set(tmp_path, ["images/hopper.jpg", "images/flower2.jpg"])
    model = f"mlx:{tiny_vlm}"
    result = run_eval(load_set(folder), [("tiny", parse_config(f"model={model}"))],
                      overrides={"max_output_tokens": 24, "progress": "off"})
    (config,) = result.configs
    assert [r["schema_valid"] for r in config.rows] == [False, False]
    assert all(r["status"] == "error" and r["error_kind"] in {"invalid_output", "max_tokens"} for r in config.rows)
    assert all(r["object_recall"] is None for r in config.rows)  # nothing valid to score
    lines = dict(totals_lines(config.summary))
    assert lines["schema-valid"] == "0%" and lines["items"] == "2 (0 ok, 0 schema-valid)"
    assert schema_note(config.rows).startswith("warning: 2 of 2 answers are not schema-valid (")




def test_the_command_with_its_own_emulator(enrich_home, tmp_path, capsys, monkeypatch):
    for var in ("GOOGLE_GEMINI_BASE_URL", "GOOGLE_API_KEY", "GEMINI_API_KEY"):  # --emulator sets these: restore after
        monkeypatch.setenv(var, "unset")
    folder = _small_set(tmp_path, ["images/coffee.jpg", "canaries/shopping-note.md"])
    rc, out = _eval(capsys, "--emulator", "--set", str(folder))
    assert rc == 0
    assert [r["status"] for r in out["configs"][0]["items"]] == ["ok", "ok"]
    assert out["warehouse"] == str(enrich_home / "warehouse")


def test_refusals_before_anything_is_sent(enrich_home, tmp_path, capsys):
    folder = _small_set(tmp_path, ["images/coffee.jpg"])
    assert cli(["eval", "--set", str(folder)]) == 2  # no key, no --emulator
    assert "--emulator" in capsys.readouterr().err
    assert cli(["eval", "--compare", "model=x", "colour=red"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err
    assert cli(["eval", "--set", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (enrich_home / "warehouse").exists()
