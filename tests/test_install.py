"""enrich as a user installs it: a wheel built from the checkout holds `enrich/` alone (with its default config
as package data), and, installed into a fresh virtual environment outside the checkout, works from another
working directory: `enrich config`, `enrich estimate`, `enrich run --emulator` on the bundled samples, then
`enrich query`. And a working directory with its own `tasks.py` and `schemas/` shadows nothing.

The fresh environment gets the wheel with `--no-deps`; its third-party packages come from the project's own
virtual environment through a `.pth` line (which, unlike site-packages, runs no `.pth` files of its own, so the
checkout's editable install is not visible there). Installing every dependency again from the index takes
minutes (5.5 min measured with a cold cache), too long for the suite; the project's `.venv` is itself built
from `pyproject.toml` by `scripts/bootstrap.sh`, so the dependency list is exercised on every fresh machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "library"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("enrich-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its `bin/` folder."""
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "_enrich_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--quiet",
                           str(wheel)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "no such option: --python" in proc.stderr:  # pip < 22.3
        pytest.fail(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir / "bin"


def test_the_wheel_holds_enrich_alone_with_its_default_config(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"enrich", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    for data in ("enrich.toml", "prices.toml", "prompts.toml"):
        assert f"enrich/config/{data}" in names
    assert "enrich/golden/labels.json" in names and "enrich/py.typed" in names  # `enrich eval`'s default set
    assert any(n.startswith("enrich/golden/images/") for n in names)
    for layer in ("flows", "tasks", "schemas", "warehouse"):
        assert any(n.startswith(f"enrich/{layer}/") and n.endswith(".py") for n in names), layer


def _enrich(bin_dir: Path, cwd: Path, home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENRICH_", "PREFECT_", "GOOGLE_", "GEMINI_")) and k != "PYTHONPATH"}
    env["ENRICH_HOME"] = str(home)
    return subprocess.run([str(bin_dir / "enrich"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_installed_command_works_from_another_folder(installed, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    home = tmp_path / "home"
    where = subprocess.run([str(installed / "python"), "-c", "import enrich, enrich.flows.pipeline as p, "
                            "enrich.config as c; print(p.__file__); print(c.__file__)"],
                           cwd=cwd, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(str(ROOT) not in line and "site-packages" in line for line in where.stdout.split()), where.stdout

    config = _enrich(installed, cwd, home, "config")
    assert config.returncode == 0, config.stderr
    assert "gemini-3.1-flash-lite" in config.stdout

    estimate = _enrich(installed, cwd, home, "estimate", str(SAMPLES), "--json")
    assert estimate.returncode == 0, estimate.stderr
    assert json.loads(estimate.stdout)["items"] >= 10

    run = _enrich(installed, cwd, home, "run", str(SAMPLES), "--emulator", "--yes", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["status"] == "finished" and summary["by_status"]["ok"] >= 10

    query = _enrich(installed, cwd, home, "query", "SELECT count(*) AS n FROM items WHERE status = 'ok'",
                    "--format", "json")
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)[0]["n"] == summary["by_status"]["ok"]


def test_a_folder_with_its_own_tasks_and_schemas_shadows_nothing(tmp_path):
    """A notebook started where a `tasks.py` and a `schemas/` package live imports enrich's, not those."""
    (tmp_path / "tasks.py").write_text("raise RuntimeError('the local tasks.py was imported')\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "__init__.py").write_text("raise RuntimeError('the local schemas/ was imported')\n")
    (tmp_path / "flows.py").write_text("raise RuntimeError('the local flows.py was imported')\n")
    (tmp_path / "warehouse").mkdir()
    (tmp_path / "warehouse" / "__init__.py").write_text("raise RuntimeError('the local warehouse/ was imported')\n")
    code = ("import enrich.flows.pipeline, enrich.tasks.discover, enrich.schemas.parquet, enrich.warehouse.views, "
            "enrich.settings; import tasks, sys; print(enrich.tasks.discover.__file__)")
    # `-c` puts the working directory first on sys.path, as a notebook does; the local tasks.py is then
    # importable as `tasks` (it is the user's), but enrich's modules are not affected by it.
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "the local tasks.py was imported" in proc.stderr  # the user's own module is theirs
    assert "the local schemas/" not in proc.stderr and "the local warehouse/" not in proc.stderr
    assert "the local flows.py" not in proc.stderr
    ok = subprocess.run([sys.executable, "-c", code.replace("import tasks, sys; ", "")], cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith(str(ROOT))
