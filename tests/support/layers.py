"""Check the import contracts of pyproject.toml ([tool.importlinter]) with import-linter.

import-linter (grimp) walks the `enrich` package's folder, but in the repository `enrich.flows`,
`enrich.tasks`, ... live in their own top-level folders (the [tool.setuptools.package-dir] mapping). So the
check first lays the sources out as the wheel installs them, `<dest>/enrich/flows/...`, following that
mapping, and runs `lint-imports` there with `<dest>` first on the path.

By hand:  .venv/bin/python tests/support/layers.py   (prints import-linter's report; exit 1 when broken)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """package -> its folder in the repository, as setuptools maps them."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapped = {name: root / folder for name, folder in config.get("package-dir", {}).items()}
    return {"enrich": root / "enrich", **mapped}


def assemble(dest: Path, root: Path = ROOT) -> Path:
    """Copy the Python sources into `dest` in their installed layout (only .py files; no caches)."""
    dirs = package_dirs(root)
    for name, folder in sorted(dirs.items()):
        # subpackages mapped elsewhere (enrich.flows) are copied from their own folder, not from enrich/
        skip = {Path(*other.split(".")[1:]) for other in dirs if other.startswith(name + ".")}
        target = dest / Path(*name.split("."))
        for src in folder.rglob("*.py"):
            rel = src.relative_to(folder)
            if "__pycache__" in rel.parts or any(rel.is_relative_to(s) for s in skip):
                continue
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
    shutil.copyfile(root / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint(dest: Path) -> subprocess.CompletedProcess:
    """Run lint-imports on an assembled tree; returncode 0 when every contract is kept."""
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    env = {**os.environ, "PYTHONPATH": str(dest)}
    return subprocess.run(cmd + ["--no-cache", "--verbose"], cwd=dest, env=env, capture_output=True,
                          text=True, timeout=240)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="enrich-layers-") as tmp:
        proc = lint(assemble(Path(tmp)))
        print(proc.stdout + proc.stderr)
        sys.exit(proc.returncode)
