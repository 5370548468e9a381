"""The package's import graph: no cycles, no stage importing a stage above it, few imports in functions.

Read from the source with `ast`, so imports inside functions (which hide cycles at run time) count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fourview

ROOT = Path(fourview.__file__).resolve().parent

LAYERS: dict[str, int] = {
    # the floor: conventions and values every stage shares
    "errors": 0, "atomic": 0, "cameras": 0, "mesh": 0, "images": 0, "views": 0, "pretrained": 0,
    "lr_schedule": 0, "training": 0, "meshio": 0, "accelerators": 0, "matting": 0,
    "render": 1,
    "data": 2,
    "mvgen": 3, "recon": 3,
    "export": 4,
    "evaluation": 5,
    "asset": 6, "pipeline": 6, "batch": 6, "server": 6,
    "cli": 7,
}  # fmt: skip
"""Layer of each top-level module or subpackage (docs/architecture.md): a module imports its own layer or lower."""

FUNCTION_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {
    ("fourview.cli", "*"): "the command line builds each command on demand, so `fourview --help` imports no torch",
    ("fourview", "*"): "the top-level names resolve on first use, so `import fourview` imports no torch",
    (
        "fourview.pipeline",
        "fourview.mvgen.pipeline",
    ): "diffusers and transformers (seconds), only when a generator loads",
    ("fourview.recon.triplane", "fourview.recon._triplane_numba"): "numba, only when the CPU kernels first run",
    (
        "fourview.data.synthetic",
        "fourview.data.glb",
    ): "trimesh, only when objects are written: the world's names (the generator's prompt checks) import fast",
}
"""(importer, imported) pairs of package modules imported inside a function, with the reason; ``*`` any."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> list[tuple[str, bool]]:
    """(imported package module, inside a function) for every import of a fourview module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.split(".")[0] == "fourview")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(
                        "."
                    )
                if base.split(".")[0] == "fourview":
                    found.extend((f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, inner)
                                 for a in child.names)  # fmt: skip
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # imports for annotations only
            visit(child, inner)

    visit(tree, False)
    return [(m, f) for m, f in found if m != name]


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GRAPH: dict[str, list[tuple[str, bool]]] = {name: _imports(path, name) for name, path in MODULES.items()}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _resolve(module: str) -> str | None:
    """The package module an import names (``fourview.x.y`` may name a symbol ``y`` of ``fourview.x``)."""
    while module and module not in MODULES:
        module = module.rsplit(".", 1)[0] if "." in module else ""
    return module or None


def test_no_import_cycles():
    edges = {m: sorted({r for i, _ in deps if (r := _resolve(i)) and r != m}) for m, deps in GRAPH.items()}
    # a package's __init__ re-exporting its modules is not a cycle with them
    edges = {m: [d for d in ds if not (MODULES[d].name == "__init__.py" and m.startswith(d + "."))]
             for m, ds in edges.items()}  # fmt: skip
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in edges:
        if module not in state:
            walk(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    missing = sorted({s for m in MODULES if (s := _stage(m)) and s not in LAYERS and s != "__main__"})
    assert not missing, f"give these a layer in LAYERS (and docs/architecture.md): {missing}"


def test_no_stage_imports_a_stage_above_it():
    bad = []
    for module, deps in GRAPH.items():
        own = _stage(module)
        if own is None:
            continue
        for imported, _ in deps:
            other = _stage(_resolve(imported) or imported)
            if other is not None and other in LAYERS and LAYERS[other] > LAYERS[own]:
                bad.append(f"{module} imports {imported}")
    assert not bad, "stages reaching up:\n" + "\n".join(bad)


def test_package_modules_are_imported_at_the_top_unless_allowed():
    bad = []
    for module, deps in GRAPH.items():
        for imported, in_function in deps:
            if not in_function:
                continue
            target = _resolve(imported) or imported
            if (module, "*") in FUNCTION_IMPORTS_ALLOWED or (module, target) in FUNCTION_IMPORTS_ALLOWED:
                continue
            bad.append(f"{module} imports {target} inside a function")
    assert not bad, "\n".join(sorted(set(bad)))


def test_the_checks_see_function_imports_and_cycles(tmp_path):
    source = "def f():\n    from fourview.recon import model\n\nimport fourview.cameras\n"
    (tmp_path / "m.py").write_text(source)
    global ROOT
    saved = ROOT
    try:
        ROOT = tmp_path.parent  # _module_name works relative to ROOT's parent
        found = _imports(tmp_path / "m.py", "pkg.m")
    finally:
        ROOT = saved
    assert ("fourview.recon.model", True) in found and ("fourview.cameras", False) in found


def test_the_pipeline_leaves_out_what_generating_does_not_use():
    """Start-up: the pipeline and the asset import neither trimesh (the synthetic world's GLB writer) nor
    huggingface_hub's HTTP stack (only a hub id downloads), nor diffusers (only when a generator loads)."""
    code = (
        "import sys\nimport fourview.asset, fourview.pipeline\n"
        "print([m for m in ('trimesh', 'huggingface_hub.hf_api', 'diffusers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
