"""Profiles (schemas/profiles.py): the schema syntax, user profiles, several profiles in one run, the
per-profile views, stale rows per profile, and a warehouse written before profiles existed.

End to end with real Prefect, the real SDK against the emulator, Parquet and DuckDB."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from enrich.errors import ConfigError
from enrich.schemas.parquet import RESULT_SCHEMA
from enrich.schemas.profiles import (RESERVED, ProfileError, model_arrow_fields, model_from_json_schema,
                                     parse_schema_spec, user_profile)
from enrich.settings import load_settings
from enrich.tokens import prompt_tokens
from enrich.warehouse.views import connect
from tests.media_factory import make_jpeg

PROJECT_CONFIG = Path(__file__).resolve().parent.parent / "config"

# ------------------------------------------------------------------------------------- the schema syntax

_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
          "list": pa.list_(pa.string())}
_names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(lambda n: n not in RESERVED)
_words = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_types = st.one_of(st.sampled_from(["", "str", "int", "float", "bool", "list"]),
                   st.lists(_words, min_size=1, max_size=4, unique=True).map(lambda v: f"enum({','.join(v)})"))


def _value(typ: str):
    if typ in ("", "str"):
        return st.text(max_size=20)
    if typ == "int":
        return st.integers(-2**40, 2**40)
    if typ == "float":
        return st.floats(allow_nan=False, allow_infinity=False, width=64)
    if typ == "bool":
        return st.booleans()
    if typ == "list":
        return st.lists(st.text(max_size=8), max_size=4)
    return st.sampled_from(typ[5:-1].split(","))


@st.composite
def specs(draw):
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    fields = [(n, draw(_types), draw(st.one_of(st.none(), _words))) for n in names]
    text = ", ".join(f"{n} {t}".strip() + (f": {d}" if d else "") for n, t, d in fields)
    values = {n: draw(_value(t)) for n, t, _ in fields}
    return text, fields, values


@hsettings(max_examples=60, deadline=None)
@given(case=specs())
def test_schema_syntax_round_trips_to_json_schema_pydantic_and_parquet(case, tmp_path_factory):
    text, fields, values = case
    js = parse_schema_spec(text)
    assert list(js["properties"]) == [n for n, _, _ in fields] and js["required"] == [n for n, _, _ in fields]
    model = model_from_json_schema("p", js)
    arrow = model_arrow_fields(model)
    assert arrow == {n: _ARROW.get(t or "str", pa.string()) for n, t, _ in fields}
    for n, _, desc in fields:
        assert model.model_json_schema()["properties"][n].get("description") == desc
    answer = model.model_validate(values)  # what the model might answer, validated like a real answer
    table = pa.Table.from_pylist([answer.model_dump(mode="json")], schema=pa.schema(list(arrow.items())))
    path = tmp_path_factory.mktemp("pq") / "t.parquet"
    pq.write_table(table, path)
    back = pq.read_table(path)
    assert back.schema == table.schema and back.to_pylist() == [answer.model_dump(mode="json")]


@pytest.mark.parametrize("spec, message", [
    ("caption, mood feelings", "unknown type 'feelings'"),
    ("caption, caption", "appears twice"),
    ("path, caption", "reserved column"),
    ("cost_usd float", "reserved column"),
    ("Total float", "lowercase letters"),
    ("mood enum()", "enum needs values"),
    ("mood enum(a,b", "unbalanced"),
    ("   ", "schema is empty"),
])
def test_a_bad_schema_is_one_clear_line(spec, message):
    with pytest.raises(ProfileError, match=message) as info:
        parse_schema_spec(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("prop", [{"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "null"},
                                  {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                                  {"type": "array", "items": {"type": "object"}}])
def test_a_json_schema_type_parquet_cannot_hold_is_refused(prop, tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"type": "object", "properties": {"x": prop}}))
    with pytest.raises(ProfileError, match="cannot be stored as a Parquet column|to be stored as a Parquet column"):
        user_profile("mine", {"schema_file": "s.json"}, "enrich.toml", tmp_path)


def test_builtin_profiles_keep_to_their_token_diet():
    """Prompt + schema as sent (enrich/tokens.py, which the emulator's countTokens agrees with:
    benchmarks/bench_prompt_overhead.py): caption and alt-text <= 80, detailed <= 120 per request."""
    from enrich.schemas.profiles import known_profiles

    known = known_profiles(load_settings({"ENRICH_HOME": "/nonexistent-enrich-home"})).known
    limits = {"caption": 80, "alt-text": 80, "detailed": 120}
    for name, limit in limits.items():
        for kind in known[name].kinds():
            assert prompt_tokens(known[name].prompts[kind], known[name].schemas[kind]) <= limit, (name, kind)


# ----------------------------------------------------------------------------------------- end to end



def run_flow(roots, reprocess=None, **overrides):
    from enrich.flows.enrich_flow import enrich_flow

    return enrich_flow([str(r) for r in roots], overrides, reprocess=reprocess)


def q(home: Path, sql: str, profile: str = "caption") -> list[tuple]:
    return connect(home / "warehouse", profile=profile).execute(sql).fetchall()


def library(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        make_jpeg(root / f"p{i}.jpg", size=(160, 120), color=(40 * i, 100, 200 - 30 * i))
    return root


@pytest.mark.usefixtures("prefect_harness")
def test_two_profiles_over_one_library_in_one_run_one_request_each_with_their_views(tmp_path, gemini, enrich_home):
    root = library(tmp_path / "lib")
    summary = run_flow([root], run_profiles=["caption", "detailed"])
    assert summary["status"] == "finished" and summary["by_status"] == {"ok": 6}
    assert gemini.stats()["billed_requests"] == 6  # one request per file per profile
    rows = q(enrich_home, "SELECT profile, count(*), count(DISTINCT path) FROM results GROUP BY ALL ORDER BY 1")
    assert rows == [("caption", 3, 3), ("detailed", 3, 3)]

    # the typed views: each profile's own fields as real columns
    cap = q(enrich_home, "SELECT caption, tags FROM profile_caption")
    assert len(cap) == 3 and all(isinstance(c, str) and c and isinstance(t, list) for c, t in cap)
    cols = [d[0] for d in connect(enrich_home / "warehouse", profile="caption").execute(
        "SELECT * FROM profile_detailed").description]
    assert {"caption", "description", "tags", "objects", "visible_text", "people_count", "setting"} <= set(cols)
    assert q(enrich_home, "SELECT count(*) FROM profile_detailed WHERE description IS NOT NULL") == [(3,)]
    # items: the default profile only
    assert q(enrich_home, "SELECT DISTINCT profile FROM items") == [("caption",)]
    assert q(enrich_home, "SELECT DISTINCT profile FROM items", profile="detailed") == [("detailed",)]

    # a rerun with both: nothing to do; a new copy of a file: copied per profile, no request
    shutil.copy(root / "p0.jpg", root / "copy.jpg")
    again = run_flow([root], run_profiles=["caption", "detailed"])
    assert gemini.stats()["billed_requests"] == 6
    assert again["unchanged"] == 6 and again["reused"] == 2
    assert q(enrich_home, "SELECT profile, reused_from IS NOT NULL FROM results WHERE path LIKE '%copy.jpg' "
                          "ORDER BY 1") == [("caption", True), ("detailed", True)]

    # a deleted file is gone for every profile, even from a run that asks only one of them
    (root / "p2.jpg").unlink()
    run_flow([root])  # the default profile only (detailed in the test session)
    assert q(enrich_home, "SELECT profile FROM results WHERE path LIKE '%p2.jpg' AND status = 'gone' ORDER BY 1") == [
        ("caption",), ("detailed",)]
    assert q(enrich_home, "SELECT count(*) FROM profile_caption") == [(3,)]  # p0, p1 and the copy


@pytest.mark.usefixtures("prefect_harness")
def test_stale_is_per_profile(tmp_path, gemini, enrich_home, monkeypatch):
    root = library(tmp_path / "lib")
    config = tmp_path / "config"
    shutil.copytree(PROJECT_CONFIG, config)
    monkeypatch.setenv("ENRICH_CONFIG_DIR", str(config))
    run_flow([root], run_profiles=["caption", "detailed"])
    assert gemini.stats()["billed_requests"] == 6
    prompts = config / "prompts.toml"
    prompts.write_text(prompts.read_text().replace("Caption this photo", "Caption this picture"))
    run_flow([root], run_profiles=["caption", "detailed"])  # stale rows are kept until asked
    assert gemini.stats()["billed_requests"] == 6
    summary = run_flow([root], reprocess=["stale"], run_profiles=["caption", "detailed"])
    assert gemini.stats()["billed_requests"] == 9  # only the caption rows, each file once
    assert summary["unchanged"] == 3
    versions = q(enrich_home, "SELECT profile, count(DISTINCT enrichment_version) FROM results GROUP BY 1 ORDER BY 1")
    assert versions == [("caption", 2), ("detailed", 1)]


@pytest.mark.usefixtures("prefect_harness")
def test_a_user_profile_from_a_fresh_user_config_end_to_end(tmp_path, gemini, enrich_home, monkeypatch):
    config = tmp_path / "myconf"
    config.mkdir()
    (config / "enrich.toml").write_text(
        '[profiles.receipts]\n'
        'schema = "merchant, total float: the amount paid, paid bool, items list, mood enum(calm,busy), n int"\n'
        'prompt = "Read this receipt."\n')
    monkeypatch.setenv("ENRICH_CONFIG_DIR", str(config))
    root = library(tmp_path / "lib", n=2)
    summary = run_flow([root], run_profiles=["receipts"])
    assert summary["by_status"] == {"ok": 2}, summary
    con = connect(enrich_home / "warehouse", profile="receipts")
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE profile_receipts)").fetchall())
    assert {k: types[k] for k in ("merchant", "total", "paid", "items", "mood", "n")} == {
        "merchant": "VARCHAR", "total": "DOUBLE", "paid": "BOOLEAN", "items": "VARCHAR[]", "mood": "VARCHAR",
        "n": "BIGINT"}
    rows = con.execute("SELECT merchant, total, paid, items, mood, n FROM profile_receipts").fetchall()
    assert len(rows) == 2 and all(r[4] in ("calm", "busy") and isinstance(r[1], float) for r in rows)
    assert con.execute("SELECT count(*) FROM items WHERE fields_json IS NOT NULL").fetchone() == (2,)
    # a bad user profile is a one-line config error naming the file
    (config / "enrich.toml").write_text('[profiles.bad]\nschema = "path, total float"\n')
    with pytest.raises(ConfigError, match=r"enrich.toml: \[profiles.bad\].*reserved column"):
        run_flow([root], run_profiles=["bad"])


@pytest.mark.usefixtures("prefect_harness")
def test_a_warehouse_written_before_profiles_reads_as_detailed_and_is_not_paid_again(tmp_path, gemini, enrich_home):
    root = library(tmp_path / "lib")
    run_flow([root], run_profiles=["detailed"])
    assert gemini.stats()["billed_requests"] == 3
    # what the writer made before this change: the same rows without the profile columns
    for part in (enrich_home / "warehouse" / "results").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["profile", "alt_text", "fields_json"]), part)
    shutil.rmtree(enrich_home / "warehouse" / "profiles")
    assert "profile" not in pq.read_schema(next((enrich_home / "warehouse" / "results").glob("*.parquet"))).names

    assert q(enrich_home, "SELECT DISTINCT profile FROM results") == [("detailed",)]
    assert q(enrich_home, "SELECT count(*) FROM profile_detailed WHERE description IS NOT NULL") == [(3,)]
    assert q(enrich_home, "SELECT count(*) FROM items", profile="detailed") == [(3,)]
    again = run_flow([root], run_profiles=["detailed"])
    assert gemini.stats()["billed_requests"] == 3 and again["unchanged"] == 3  # its rows are the detailed ones
    run_flow([root], run_profiles=["caption"])  # another profile is another question
    assert gemini.stats()["billed_requests"] == 6
    assert q(enrich_home, "SELECT profile, count(*) FROM results GROUP BY 1 ORDER BY 1") == [
        ("caption", 3), ("detailed", 3)]


def test_the_results_schema_holds_the_profile_columns():
    assert {"profile", "alt_text", "fields_json"} <= set(RESULT_SCHEMA.names)
