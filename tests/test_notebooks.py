"""Runs every notebook's example/assert cells through `nbdev_test`, one pytest test per notebook,
so CI counts the notebook tests. `#| slow` cells run only when OI_ML_SLOW=1, which `make test-all` sets."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook(notebook, tmp_path):
    flags = ["--flags", "slow"] if os.environ.get("OI_ML_SLOW") == "1" else []
    env = {**os.environ, "OI_ML_DATA_DIR": str(tmp_path / "data"), "MPLBACKEND": "Agg"}
    nbdev_test = Path(sys.executable).with_name("nbdev_test")
    proc = subprocess.run([str(nbdev_test), "--path", str(ROOT / "nbs" / notebook), *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{notebook} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"


def test_make_test_all_runs_the_slow_notebook_cells():
    "Without OI_ML_SLOW=1 in the test-all recipe, the `#| slow` cells would silently never run anywhere."
    recipe = (ROOT / "Makefile").read_text().split("\ntest-all:", 1)[1].split("\n\n", 1)[0]
    assert "OI_ML_SLOW=1" in recipe and "pytest" in recipe, recipe
