"""The core never imports Prefect: checked in a fresh interpreter, where nothing was imported before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .helpers import REPO

# Imports each module in turn and names the first one after which Prefect is loaded.
CHECK = """
import importlib, pkgutil, sys
names = sys.argv[1:]
if names == ["--all"]:
    import intentflow
    names = ["intentflow"] + ["intentflow." + m.name for m in pkgutil.iter_modules(intentflow.__path__)]
for name in names:
    importlib.import_module(name)
    if "prefect" in sys.modules:
        print("prefect imported by", name)
        sys.exit(1)
print("checked", len(names), "modules")
"""


def import_in_fresh_interpreter(*modules: str, path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*path, REPO]))}
    return subprocess.run([sys.executable, "-c", CHECK, *modules], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_core_entry_points_do_not_import_prefect():
    result = import_in_fresh_interpreter("intentflow", "intentflow.cli", "intentflow.inference", "intentflow.train")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 4 modules" in result.stdout


def test_no_module_of_the_core_package_imports_prefect():
    result = import_in_fresh_interpreter("--all")

    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[1]) >= 15, result.stdout


def test_the_check_detects_a_prefect_import(tmp_path):
    """The check can fail: a module that imports (a stand-in) prefect trips it."""
    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "__init__.py").write_text("")
    (tmp_path / "uses_prefect.py").write_text("import prefect\n")

    result = import_in_fresh_interpreter("intentflow", "uses_prefect", path=(tmp_path,))

    assert result.returncode == 1
    assert "prefect imported by uses_prefect" in result.stdout
