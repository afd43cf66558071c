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
        ("reporting/rounds.py", "import iif_ray.lm.spec\n", "ray-free-reporting"),
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


def import_cycles(package: str) -> list[list[str]]:
    """The groups of modules of ``package`` that import each other, directly or through
    others (lazy imports inside functions included): Tarjan's strongly connected components
    of grimp's import graph, iteratively."""
    import grimp

    graph = grimp.build_graph(package)
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m)
                       if n in graph.modules) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


def test_no_import_cycle_anywhere_in_the_package() -> None:
    """The layers alone do not rule out a circle among siblings that may import each other,
    or inside one package (the report sections once imported each other in a circle)."""
    assert import_cycles("iif_ray") == []


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch) -> None:
    """A package whose modules import each other through a third, one of them lazily."""
    pkg = tmp_path / "circ"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from circ import b\n")
    (pkg / "b.py").write_text("import circ.c\n")
    (pkg / "c.py").write_text("import circ.a\n")
    (pkg / "d.py").write_text("import circ.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("circ") == [["circ.a", "circ.b", "circ.c"]]
