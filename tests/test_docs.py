"""The README and the shipped config must not drift from the code: these fail when one changes alone."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from enrich.cli import COMMANDS, build_parser
from enrich.settings import RESOLUTION_MAX_SIDE

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def _readme_command_lines() -> list[tuple[str, str]]:
    """(subcommand, the rest of the line) for every `enrich SUBCOMMAND ...` the README shows."""
    found = []
    for line in README.splitlines():
        for m in re.finditer(r"\benrich ([a-z]+)\b(.*)", line):
            if m.group(1) in COMMANDS:
                found.append((m.group(1), m.group(2)))
    return found


def test_every_command_is_documented_in_the_readme():
    shown = {name for name, _ in _readme_command_lines()}
    assert set(COMMANDS) <= shown, f"commands missing from README: {set(COMMANDS) - shown}"


def test_every_flag_the_readme_shows_is_accepted_by_its_command():
    parsers = _subparsers()
    checked = 0
    for name, rest in _readme_command_lines():
        parser = parsers[name]
        rest = rest.split("#", 1)[0]  # a trailing shell comment is prose
        # a command with actions (`enrich export xmp ...`): the flags are the action's
        actions = next((a.choices for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"), {})
        first = rest.split()[0] if rest.split() else ""
        if first in actions:
            parser = actions[first]
        known = {opt for action in parser._actions for opt in action.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            assert flag in known, f"README shows `enrich {name} ... {flag}`, which `enrich {name}` does not accept"
            checked += 1
    assert checked > 10  # the README's examples do use flags; if none are found, the parsing above broke


def test_every_benchmark_is_listed_in_the_readme():
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
    assert scripts
    missing = [s for s in scripts if f"benchmarks/{s}" not in README]
    assert not missing, f"benchmarks not in README: {missing}"


def test_shipped_config_and_readme_state_the_code_default_resolution_tiers():
    config = tomllib.loads((ROOT / "config" / "enrich.toml").read_text(encoding="utf-8"))
    assert config["resolution_max_side"] == RESOLUTION_MAX_SIDE
    tiers = " / ".join(str(RESOLUTION_MAX_SIDE[t]) for t in ("low", "medium", "high"))
    assert f"long side {tiers} px by resolution" in README
    assert f"`low` is {RESOLUTION_MAX_SIDE['low']} px" in README


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "exec ./run-tests" in script and "./run-tests" in README
