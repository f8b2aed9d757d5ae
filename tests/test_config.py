"""The settings registry, the user config folder (merged key by key over the packaged defaults) and
`enrich config` / `enrich config init`. In-process and fast: no Prefect, no network."""
from __future__ import annotations

import json
import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from enrich.cli import main
from enrich.errors import ConfigError
from enrich.pricing import load_prices
from enrich.settings import DEFAULT_CONFIG_DIR, SETTINGS, RateLimit, default, load_settings

MODEL = "gemini-3.1-flash-lite"
OTHER = "gemini-2.5-flash-lite"
SECRET = "AIzaSy-not-a-real-key-0123456789"


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ENRICH_HOME", str(home))
    for var in ("ENRICH_CONFIG_DIR", "ENRICH_CONCURRENCY", "ENRICH_MODEL", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return home


def user_file(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def config_json(capsys, *argv: str) -> dict:
    assert main([*argv, "config", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def error_of(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line
    return err


def test_a_user_price_and_prompt_override_only_those_entries_and_config_shows_the_source(home, capsys):
    folder = home / "config"
    prices = user_file(folder, "prices.toml", f'[meta]\ndate = "2026-12-01"\n[models."{MODEL}"]\ninput = 0.5\n')
    prompts = user_file(folder, "prompts.toml", '[image]\nprompt = "My own photo prompt."\n')

    packaged, mine = load_prices(DEFAULT_CONFIG_DIR), load_prices(folder)
    assert mine.price(MODEL).input == Decimal("0.5")
    # key by key: the model's other prices, and every other model, keep the packaged values
    assert mine.price(MODEL).output == packaged.price(MODEL).output
    assert mine.price(MODEL).cached_input == packaged.price(MODEL).cached_input
    assert {m: p for m, p in mine.models.items() if m != MODEL} == {
        m: p for m, p in packaged.models.items() if m != MODEL}
    assert mine.date == "2026-12-01" and str(prices) in mine.source

    s = load_settings()
    assert s.prompts["image"] == "My own photo prompt."
    assert {k: v for k, v in s.prompts.items() if k != "image"} == {
        k: v for k, v in load_settings({"ENRICH_HOME": str(home / "elsewhere")}).prompts.items() if k != "image"}

    info = config_json(capsys)
    assert info["prices"][MODEL]["input"] == "0.5" and str(prices) in info["prices"][MODEL]["source"]
    assert info["prices"][OTHER]["source"] == "default"
    assert str(prompts) in info["prompts"]["image"]["source"]
    assert {info["prompts"][k]["source"] for k in ("audio", "document", "video")} == {"default"}
    assert info["settings"]["model"] == {**info["settings"]["model"], "value": MODEL, "source": "default"}
    assert info["paths"]["user_config"]["value"] == str(folder.resolve())
    assert info["paths"]["packaged_defaults"]["value"] == str(DEFAULT_CONFIG_DIR)
    assert info["price_table"]["date"] == "2026-12-01"

    assert main(["config"]) == 0  # the text form names the user file on those lines only
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.strip().startswith(MODEL + " "))
    assert str(prices) in line
    assert "[default]" in next(x for x in text.splitlines() if x.strip().startswith(OTHER + " "))


def test_environment_beats_the_user_file_which_beats_the_default(home, capsys, monkeypatch):
    path = user_file(home / "config", "enrich.toml", "[run]\nconcurrency = 3\n[media]\nmax_pdf_pages = 7\n")
    s = load_settings()
    assert (s.concurrency, s.max_pdf_pages, s.chunk_size) == (3, 7, default("chunk_size"))
    assert s.source("concurrency") == f"{path} [run] concurrency" and s.source("chunk_size") == "default"

    monkeypatch.setenv("ENRICH_CONCURRENCY", "11")
    info = config_json(capsys)["settings"]
    assert info["concurrency"]["value"] == 11 and info["concurrency"]["source"] == "env ENRICH_CONCURRENCY"
    assert info["max_pdf_pages"]["value"] == 7 and str(path) in info["max_pdf_pages"]["source"]


def test_a_flag_beats_the_environment(home, tmp_path, capsys, monkeypatch):
    by_flag = user_file(tmp_path / "by-flag", "enrich.toml", "[run]\nconcurrency = 5\n").parent
    by_env = user_file(tmp_path / "by-env", "enrich.toml", "[run]\nconcurrency = 9\n").parent
    monkeypatch.setenv("ENRICH_CONFIG_DIR", str(by_env))
    info = config_json(capsys, "--config", str(by_flag))
    assert info["paths"]["user_config"] == {**info["paths"]["user_config"], "value": str(by_flag.resolve()),
                                            "source": "flag"}
    assert info["settings"]["concurrency"]["value"] == 5
    assert os.environ["ENRICH_CONFIG_DIR"] == str(by_env)  # restored after the command
    assert config_json(capsys)["settings"]["concurrency"]["value"] == 9

    monkeypatch.setenv("ENRICH_CONCURRENCY", "7")
    s = load_settings().with_overrides(concurrency=2)  # what --concurrency does
    assert s.concurrency == 2 and s.source("concurrency") == "flag"


@pytest.mark.parametrize("command", [["config"], ["query", "SELECT 1"], ["runs"], ["compact"],
                                     ["estimate", "."], ["run", "."], ["serve", ".", "--cron", "0 2 * * *", "--start-server"]])
def test_every_command_reads_the_config_folder_given_by_the_flag(home, tmp_path, capsys, command):
    missing = tmp_path / "no-such-folder"
    err = error_of(capsys, "--config", str(missing), *command)
    assert f"config folder not found: {missing}" in err and "--config" in err


def test_a_bad_toml_file_or_value_is_one_line_naming_the_file_and_key(home, capsys):
    folder = home / "config"
    path = user_file(folder, "enrich.toml", "[run\nconcurrency = 3\n")
    assert str(path) in error_of(capsys, "config") and "invalid TOML" in error_of(capsys, "config")

    for text, key in (('[run]\nconcurrency = "many"\n', "[run] concurrency"),
                      ("[run]\nconcurrency = 0\n", "[run] concurrency"),
                      ("[media]\ntrim_long_media = 1\n", "[media] trim_long_media"),
                      ("[run]\nconcurency = 3\n", "[run] concurency"),  # a typo is not silently ignored
                      ("[estimate.output_tokens]\nimage = 'lots'\n", "[estimate] output_tokens")):
        user_file(folder, "enrich.toml", text)
        err = error_of(capsys, "config")
        assert str(path) in err and key in err, err
    (folder / "enrich.toml").unlink()

    prices = user_file(folder, "prices.toml", f'[models."{MODEL}"]\ninput = 0.5\n')  # no [meta] date
    err = error_of(capsys, "config")
    assert str(prices) in err and "[meta] date" in err
    user_file(folder, "prices.toml", f'[meta]\ndate = "2026-12-01"\n[models."{MODEL}"]\ninput = "cheap"\n')
    err = error_of(capsys, "config")
    assert str(prices) in err and MODEL in err
    (folder / "prices.toml").unlink()

    prompts = user_file(folder, "prompts.toml", "[image]\nprompt = 3\n")
    err = error_of(capsys, "config")
    assert str(prompts) in err and "[image] prompt" in err

    with pytest.raises(ConfigError, match="ENRICH_MAX_ATTEMPTS"):
        load_settings({"ENRICH_HOME": str(home / "x"), "ENRICH_MAX_ATTEMPTS": "five"})


def test_config_init_writes_a_commented_config_and_never_overwrites(home, capsys):
    folder = home / "config"
    mine = user_file(folder, "enrich.toml", "[run]\nconcurrency = 4\n")
    assert main(["config", "init"]) == 0
    out = capsys.readouterr().out
    assert f"kept {mine}" in out and f"wrote {folder / 'prices.toml'}" in out
    assert mine.read_text() == "[run]\nconcurrency = 4\n"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left behind
    # the examples change nothing until edited
    assert load_prices(folder).models == load_prices(DEFAULT_CONFIG_DIR).models
    assert load_settings().prompts == load_settings({"ENRICH_HOME": str(home / "elsewhere")}).prompts

    mine.unlink()
    assert main(["config", "init"]) == 0
    written = mine.read_text()
    tomllib.loads(written)
    assert load_settings().concurrency == default("concurrency")  # everything is commented out
    for spec in SETTINGS.values():
        if spec.toml and not spec.secret:
            table = f"# [{'.'.join(spec.toml)}]" if spec.type in (dict, RateLimit) else f"# {spec.toml[-1]} = "
            assert table in written, spec.name
        for env in spec.env if spec.toml and spec.type not in (dict, RateLimit) and not spec.secret else ():
            assert env in written, env
    edited = re.sub(r"^# concurrency = \d+", "concurrency = 8", written, flags=re.M)
    mine.write_text(edited)
    assert load_settings().concurrency == 8
    assert main(["config", "init"]) == 0 and mine.read_text() == edited


def test_the_api_key_is_never_shown(home, capsys, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    info = config_json(capsys)
    assert info["settings"]["api_key"]["value"] == "set"
    assert info["settings"]["api_key"]["source"] == "env GEMINI_API_KEY"
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    assert SECRET not in text and SECRET not in json.dumps(info) and "api_key = \"set\"" in text
    monkeypatch.delenv("GEMINI_API_KEY")
    assert config_json(capsys)["settings"]["api_key"]["value"] == "unset"


def test_the_packaged_enrich_toml_states_exactly_the_declared_defaults():
    """config/enrich.toml is documentation with comments; the registry is the one declaration. This fails on
    drift: a value there that differs from its declaration, or a setting the file does not mention."""
    from enrich.settings import _from_toml  # the same parsing load_settings uses

    text = (DEFAULT_CONFIG_DIR / "enrich.toml").read_text()
    packaged = tomllib.loads(text)
    for spec in SETTINGS.values():
        if not spec.toml or spec.secret:
            continue
        raw = packaged
        for key in spec.toml:
            raw = raw.get(key) if isinstance(raw, dict) else None
        if spec.name == "rate_limits":
            assert raw and "default" in raw  # the per-model figures are data, like prices
            continue
        if raw is None:  # an optional setting the file shows commented out
            assert spec.default is None and re.search(rf"^# {spec.toml[-1]} = ", text, re.M), spec.name
            continue
        assert _from_toml(spec, raw, "packaged") == spec.default, spec.name
