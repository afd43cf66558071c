"""The package layout is a map: each layer imports only from its own layer or below.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and ``lint-imports`` checks
them on every ``make test``; these tests run the same check, show it failing on a deliberate
upward import, and check at run time that the Ray-free layers really load without Ray.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = "iif_ray layers (L8 cli ... L0 attribution, envs, ledger, options)"
RAY_FREE = "L0 and in-process scoring never import Ray"
ENGINE_FREE = "The run model knows neither engine nor Ray"
RAY_FREE_REPORTING = "reporting reads committed files without Ray or an engine"
SECTIONS = "reporting: shared helpers below the sections, no circles"
TITLES = {"layers": LAYERS, "ray-free": RAY_FREE, "engine-free": ENGINE_FREE,
          "ray-free-reporting": RAY_FREE_REPORTING, "sections": SECTIONS}
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent))


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS, "lint-imports (import-linter) is not installed beside this Python"
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(config), "--no-cache", "--no-logo"],
        cwd=package_parent, capture_output=True, text=True, timeout=120,
        env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(package_parent)},
    )


def test_the_package_keeps_its_layers() -> None:
    proc = lint_imports(ROOT, ROOT / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for title in TITLES.values():
        assert f"{title} KEPT" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("module", "upward_import", "contract"),
    [
        # L0 reaching up to the CLI (L8), even inside a function, as lazy imports hide.
        ("attribution/influence.py", "def _x():\n    import iif_ray.cli\n", "layers"),
        # L2 reaching into the engines (L3).
        ("scoring/pool.py", "from iif_ray.rllib import settings\n", "layers"),
        # L3 reaching into the reporting (L6).
        ("rllib/influence_round.py", "import iif_ray.reporting.report\n", "layers"),
        # The Ray-free core importing Ray.
        ("ledger.py", "import ray\n", "ray-free"),
        # The run model reaching into an engine.
        ("run/progress.py", "def _x():\n    import iif_ray.lm.spec\n", "engine-free"),
        # The reporting reaching up into the experiments, or sideways into an engine.
        ("reporting/tables.py", "import iif_ray.experiments.sweeps\n", "layers"),
        ("reporting/stats.py", "from ray import tune\n", "ray-free-reporting"),
        ("reporting/records.py", "import iif_ray.lm.spec\n", "ray-free-reporting"),
        # A shared helper importing a section: the circle the split removed.
        ("reporting/metrics.py", "import iif_ray.reporting.evidence\n", "sections"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, module, upward_import, contract) -> None:
    copy = tmp_path / "iif_ray"
    shutil.copytree(ROOT / "iif_ray", copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / module).open("a") as f:
        f.write("\n\n" + upward_import)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    proc = lint_imports(tmp_path, tmp_path / "pyproject.toml")
    assert proc.returncode != 0, proc.stdout
    title = TITLES[contract]
    assert f"{title} BROKEN" in proc.stdout, proc.stdout
    name = "iif_ray." + module.removesuffix(".py").replace("/", ".")
    broken = proc.stdout.split("Broken contracts")[1]
    assert name in broken.split(title)[1], proc.stdout


def test_the_ray_free_layers_load_without_ray() -> None:
    """What the contract says statically, checked at run time: importing L0, the in-process
    scorer and the run model pulls in neither Ray nor dm-tree (RLlib's tree library)."""
    code = ("import sys, iif_ray.attribution, iif_ray.presets, iif_ray.envs, iif_ray.ledger, "
            "iif_ray.scoring, iif_ray.run; "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'tree'))]; "
            "print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
