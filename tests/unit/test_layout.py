"""The package layout: imports point down the layers, form no circle, and the numpy core and the
driver stay free of what they must not load (docs/architecture.md draws it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each package may import those of a lower rank; packages of one rank may not import one another.
RANKS = {
    "errors": 0,
    "core": 1,
    "models": 2,
    "run": 3,
    "pipeline": 4, "training": 4, "quality": 4,
    "report": 5,
    "studies": 6,
    "jobs": 7,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [*(ROOT / "mhgan_dist").rglob("*.py"), *(ROOT / "jobs").glob("*.py")]
    return {_module_name(p): p for p in files}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules a file imports anywhere in it (lazy imports in functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] == "jobs" else parts[1] if len(parts) > 1 else "mhgan_dist"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    # A module's own packages are initialised before it whatever it imports: not an edge.
    return {name: {t for t in _imports(path, known) if not (name + ".").startswith(t + ".")}
            for name, path in modules.items()}


def test_every_package_has_a_rank(graph):
    assert {_package(m) for m in graph} - {"mhgan_dist"} <= set(RANKS)


def test_imports_point_down_the_layers(graph):
    upward = []
    for module, imported in graph.items():
        source = _package(module)
        for target in imported:
            if target == "mhgan_dist" or source == "mhgan_dist":
                continue
            other = _package(target)
            if other != source and RANKS[other] >= RANKS[source]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_module_imports_itself_through_others(graph):
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    index, low, on_stack, stack, circles, counter = {}, {}, set(), [], [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_nothing_reads_rays_private_modules():
    offenders = [str(p.relative_to(ROOT)) for p in [*(ROOT / "mhgan_dist").rglob("*.py"), *(ROOT / "jobs").glob("*.py")]
                 if "ray._private" in p.read_text() or "from ray import _private" in p.read_text()]
    assert offenders == []


def _loaded_after_import(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(sorted(m for m in ('torch', 'ray', 'pyarrow') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return eval(done.stdout.strip())


def test_the_numpy_core_imports_neither_torch_nor_ray_nor_files():
    assert _loaded_after_import("import mhgan_dist.core.pickers, mhgan_dist.core.calibrators, "
                                "mhgan_dist.core.thinning, mhgan_dist.core.streams") == []


def test_the_driver_and_the_run_record_import_no_torch():
    assert "torch" not in _loaded_after_import("import mhgan_dist.pipeline.driver, mhgan_dist.run.record, "
                                               "jobs.generate, jobs.repick")
