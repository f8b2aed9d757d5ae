"""The layers hold (README "Layers"): import-linter's contracts in pyproject.toml are kept, and they do catch an
upward import; Prefect is set up by the commands that start it, never at import time; unknown or abbreviated
flags are errors; run, estimate and serve declare their shared flags once."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.layers import ROOT, assemble, lint, package_dirs

CONTRACTS = {c["id"]: c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


def test_the_import_contracts_are_kept(tmp_path):
    proc = lint(assemble(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in proc.stdout


def test_an_upward_import_a_cross_command_import_and_a_cycle_break_the_contracts(tmp_path):
    tree = assemble(tmp_path)
    injected = {
        # the warehouse reaching up to the command line
        "enrich/warehouse/store.py": "from enrich.cli import main as _upward\n",
        # a read-only command pulling in the Prefect flow
        "enrich/commands/query.py": "from enrich.flows.enrich_flow import enrich_flow as _flow\n",
        # one command using another's helper
        "enrich/commands/runs.py": "from enrich.commands.run import exit_code as _other\n",
        # the per-kind preparer importing its dispatcher back: a cycle
        "enrich/tasks/prepare_image.py": "from enrich.tasks.prepare import prepare_file as _cycle\n",
    }
    for rel, line in injected.items():
        with open(tree / rel, "a", encoding="utf-8") as fh:
            fh.write("\n" + line)
    proc = lint(tree)
    out = proc.stdout
    assert proc.returncode == 1, out[-4000:] + proc.stderr
    assert f"Contracts: {len(CONTRACTS) - 5} kept, 5 broken." in out
    assert "enrich.warehouse.store -> enrich.cli" in out  # the layers and the no-cli contracts
    assert "enrich.warehouse is not allowed to import enrich.cli" in out
    assert "enrich.commands.query -> enrich.flows.enrich_flow" in out
    assert "enrich.commands.runs is not allowed to import enrich.commands.run" in out
    assert "No cycles are allowed in enrich.tasks" in out


def _layered_modules() -> set[str]:
    names = set()
    for layer in CONTRACTS["layers"]["layers"]:
        names |= {part.strip() for part in layer.replace("|", ":").split(":")}
    return names


def test_every_module_of_the_package_has_a_place_in_the_layers():
    """A new module under enrich/ (or a new mapped package) must be placed in a layer, else nothing checks it."""
    children = {f"enrich.{p.stem}" for p in (ROOT / "enrich").glob("*.py") if p.stem != "__init__"}
    children |= {f"enrich.{p.name}" for p in (ROOT / "enrich").iterdir()
                 if p.is_dir() and (p / "__init__.py").exists()}
    children |= {name for name in package_dirs() if name.count(".") == 1}
    standalone = set(CONTRACTS["emulator-standalone"]["source_modules"])
    missing = children - _layered_modules() - standalone
    assert not missing, f"not in any layer of [tool.importlinter] in pyproject.toml: {sorted(missing)}"
    assert "enrich.estimate" not in children  # the estimate use case lives with the flows now


def test_every_command_that_starts_no_run_is_held_to_no_prefect():
    from enrich.cli import COMMANDS

    starts_prefect = {"run", "serve", "eval"}  # commands that start runs
    held = set(CONTRACTS["read-only-commands"]["source_modules"])
    missing = {module for name, module in COMMANDS.items() if name not in starts_prefect} - held
    assert not missing, f"add to the read-only-commands contract in pyproject.toml: {sorted(missing)}"


LIBRARY = ["flows", "tasks", "warehouse", "schemas", "enrich/backends"] + [
    f"enrich/{name}.py" for name in ("errors", "settings", "pricing", "tokens", "budget", "limiter",
                                     "concurrency", "progress", "prefect_env")]


def _uses_of_usage_error(entries: list[str]) -> list[str]:
    found = []
    for entry in entries:
        path = ROOT / entry
        for src in ([path] if path.is_file() else sorted(path.rglob("*.py"))):
            for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Name) and node.id == "UsageError"
                        or isinstance(node, ast.alias) and node.name == "UsageError"):
                    found.append(f"{src.relative_to(ROOT)}:{node.lineno}")
    return found


def test_library_code_raises_its_own_errors_not_the_command_lines():
    """UsageError means "bad command-line arguments": only enrich/cli.py and enrich/commands/ raise it; the
    layers below raise ConfigError, WarehouseLocked, ... and the CLI maps them to exit codes (errors.py
    declares it, as a class, which is no use)."""
    assert _uses_of_usage_error(LIBRARY) == []
    assert _uses_of_usage_error(["enrich/commands/run.py", "enrich/cli.py"])  # the scan does find uses


PREFECT_SET_UP = ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")


def test_no_module_sets_up_prefect_when_imported(tmp_path):
    """Importing every module of the package (the flow included) changes no Prefect setting; the commands
    that start Prefect call configure_prefect_env(), which does."""
    code = (
        "import importlib, os, pkgutil, sys\n"
        "import enrich\n"
        "names = [m.name for m in pkgutil.walk_packages(enrich.__path__, 'enrich.')]\n"
        "names += ['enrich.flows.enrich_flow', 'enrich.commands.run', 'enrich.commands.serve']\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        "assert 'prefect' in sys.modules\n"
        f"keys = {PREFECT_SET_UP!r}\n"
        "print('after import:', sorted(k for k in keys if k in os.environ))\n"
        "from enrich.prefect_env import configure_prefect_env\n"
        "configure_prefect_env()\n"
        "print('after set-up:', sorted(k for k in keys if k in os.environ))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in PREFECT_SET_UP}
    env.update(ENRICH_HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / "prefect"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "after import: []" in proc.stdout
    assert f"after set-up: {sorted(PREFECT_SET_UP)}" in proc.stdout


# -- flags ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["run", "samples/library", "--mod", "x"],        # once read as --model x
    ["run", "samples/library", "--budg", "1"],       # once read as --budget 1
    ["run", "samples/library", "--mode", "batch"],   # once read as --model batch
    ["estimate", "samples/library", "--mod", "x"],
    ["serve", "samples/library", "--cron", "0 2 * * *", "--budg", "1"],
    ["query", "SELECT 1", "--form", "json"],
])
def test_abbreviated_or_unknown_flags_are_errors(argv, capsys):
    from enrich.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"unrecognized arguments: {argv[-2]}" in capsys.readouterr().err


def test_estimate_mode_batch_still_works(tmp_path, capsys, monkeypatch):
    import json

    from enrich.cli import main

    monkeypatch.setenv("ENRICH_HOME", str(tmp_path))
    monkeypatch.delenv("ENRICH_WAREHOUSE", raising=False)
    assert main(["estimate", str(ROOT / "samples" / "library"), "--mode", "batch", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["mode"] == "batch" and est["items"] > 0


def _flags(parser) -> dict[str, tuple]:
    return {a.option_strings[0] if a.option_strings else a.dest:
            (tuple(a.option_strings), a.dest, a.type, tuple(a.choices or ()), a.nargs, type(a).__name__, a.default)
            for a in parser._actions if a.dest != "help"}


def test_run_estimate_and_serve_declare_their_shared_flags_once():
    from enrich.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    run, estimate, serve = (_flags(subs[name]) for name in ("run", "estimate", "serve"))
    shared = {"paths", "--model", "--resolution", "--warehouse", "--reprocess"}
    runs_only = {"--budget", "--concurrency", "--rpm", "--tpm", "--progress", "--chunk-size", "--keep-metadata",
                 "--emulator"}
    assert shared <= set(estimate) and shared | runs_only <= set(run) and shared | runs_only <= set(serve)
    for flag in shared:
        assert run[flag] == estimate[flag] == serve[flag], flag
    for flag in runs_only:
        assert run[flag] == serve[flag], flag
    # help differs only where the meaning does (estimate prices a model, reads the warehouse for history)
    helps = {name: {a.dest: a.help for a in subs[name]._actions} for name in ("run", "serve")}
    assert all(helps["run"][dest] == helps["serve"][dest] for dest in ("model", "warehouse", "reprocess", "budget"))
