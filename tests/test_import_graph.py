"""The library's import graph, read from its own source (no import is executed).

Four rules (docs/architecture.md): no import circles inside `workbench/`; the library never
imports Jupyter, widgets, plotly or the benchmarks; an import inside a function only for a
dependency listed in OPTIONAL below, marked `# optional-import: <why>` on its line; and every
module sits in one of the layers of LAYERS, importing only from its own layer or the ones below.
The checker is first run on a small package with exactly one of each fault, so a checker that
sees nothing cannot pass.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# imports that may stay inside functions, and why
OPTIONAL = {
    "peft": "costs seconds to import; only LoRA paths need it",
    "torch.utils.tensorboard": "the export extra; only TensorBoardWatcher needs it",
    "wandb": "the export extra; only WandbWatcher needs it",
    "yaml": "only the TRL export writes YAML",
    "pandas": "costs about a second to import; only table views and parquet files need it",
}
# the layers of docs/architecture.md, bottom up; a module imports only from its own layer or lower ones
LAYERS = {
    "engine": ("ckernels", "sampling", "fast_rollout", "rollout"),
    "core": ("config", "objectives", "losses", "tokenizer", "tasks", "tasks.base", "tasks.arithmetic",
             "tasks.gsm8k", "tasks.jsonl", "tasks.qa", "tasks.repeat", "models", "batching", "evaluation", "costs",
             "metrics", "runs", "student_samples"),
    "real models": ("hub", "adapters", "compat", "pairs", "standins", "zoo", "memory"),
    "training": ("trainer", "loggers"),
    "lab": ("", "__main__", "experiments", "analysis", "claims", "compare", "plateau", "runaway", "zoo_build", "cli",
            "export", "real", "memcheck", "hf", "modes", "injection", "literature"),
}
FORBIDDEN = ("widgets", "ipywidgets", "plotly", "IPython", "ipykernel", "jupyter", "nbformat", "papermill",
             "benchmarks")


def module_name(pkg_root: Path, path: Path) -> str:
    parts = list(path.relative_to(pkg_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def targets(node, name: str, is_pkg: bool, modules: set[str]) -> list[str]:
    """Absolute module names one import statement reads (`from . import x` reads module `pkg.x` if it is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]


def import_graph(pkg_root: Path) -> dict:
    """{modules, edges (internal arrows), external (module -> imported names), function_level [(module, target,
    line, source line)]} for the package at `pkg_root`."""
    files = {module_name(pkg_root, p): p for p in sorted(pkg_root.rglob("*.py"))}
    modules = set(files)
    edges, external, function_level = set(), {}, []
    for name, path in files.items():
        text = path.read_text()
        lines = text.splitlines()

        def walk(node, in_function):
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for t in targets(child, name, path.name == "__init__.py", modules):
                        if in_function:
                            function_level.append((name, t, child.lineno, lines[child.lineno - 1]))
                        if t in modules:
                            if t != name:
                                edges.add((name, t))
                        else:
                            external.setdefault(name, set()).add(t)
                walk(child, inside)

        walk(ast.parse(text), False)
    return {"modules": modules, "edges": edges, "external": external, "function_level": function_level}


def cycles(modules, edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    out_edges = {m: sorted(b for a, b in edges if a == m) for m in modules}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in out_edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def layer_problems(pkg_root: Path, layers: dict) -> list[str]:
    """Modules in no layer, and imports that point up to a higher layer."""
    g = import_graph(pkg_root)
    short = lambda m: m[len(pkg_root.name) + 1:] if m != pkg_root.name else ""     # noqa: E731
    rank = {f"{pkg_root.name}.{m}" if m else pkg_root.name: (i, name)
            for i, (name, mods) in enumerate(layers.items()) for m in mods}
    out = [f"{short(m) or pkg_root.name} is in no layer" for m in sorted(g["modules"]) if m not in rank]
    for a, b in sorted(g["edges"]):
        if a in rank and b in rank and rank[b][0] > rank[a][0]:
            out.append(f"{short(a)} ({rank[a][1]}) imports {short(b)} ({rank[b][1]}): a layer above it")
    return out


def problems(pkg_root: Path) -> list[str]:
    g = import_graph(pkg_root)
    out = [f"import circle: {' <-> '.join(c)}" for c in cycles(g["modules"], g["edges"])]
    for mod, names in sorted(g["external"].items()):
        out += [f"{mod} imports {t}" for t in sorted(names) if t.split(".")[0] in FORBIDDEN]
    for mod, t, line, src in g["function_level"]:
        if t.split(".")[0] == pkg_root.name:
            out.append(f"{mod}:{line} imports {t} inside a function (move it to the top of the file)")
        elif not any(t == o or t.startswith(o + ".") for o in OPTIONAL):
            out.append(f"{mod}:{line} imports {t} inside a function, and it is not an optional dependency")
        elif "# optional-import:" not in src:
            out.append(f"{mod}:{line} imports {t} inside a function without a `# optional-import: <why>` comment")
    return out


def _toy_package(tmp_path, modules: dict[str, str]):
    """A package `toy` under tmp_path with an empty __init__ and {module name: source}."""
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, src in modules.items():
        (pkg / f"{name}.py").write_text(src)
    return pkg


def test_the_checker_sees_a_circle_a_widget_and_a_function_level_import(tmp_path):
    pkg = _toy_package(tmp_path, {
        "a": "from .b import f\n",
        "b": "from . import a\n\ndef f():\n    import json\n    from . import c\n",
        "c": "import plotly\n\ndef g():\n    import pandas  # optional-import: heavy\n    import peft\n"})
    found = problems(pkg)
    assert "import circle: toy.a <-> toy.b" in found
    assert "toy.c imports plotly" in found
    assert any(p.startswith("toy.b:4 imports json inside a function, and it is not") for p in found)
    assert any(p.startswith("toy.b:5 imports toy.c inside a function (move it") for p in found)
    assert any(p.startswith("toy.c:5 imports peft inside a function without") for p in found)
    assert len(found) == 5, found           # pandas with its comment is allowed


def test_workbench_has_no_circles_no_jupyter_and_only_optional_function_level_imports():
    found = problems(ROOT / "workbench")
    assert not found, "\n".join(found)


def test_the_layer_checker_sees_an_upward_import_and_an_unplaced_module(tmp_path):
    pkg = _toy_package(tmp_path, {"low": "from . import high\n", "high": "from . import low\n", "stray": ""})
    found = layer_problems(pkg, {"bottom": ("low",), "top": ("", "high")})
    assert found == ["stray is in no layer", "low (bottom) imports high (top): a layer above it"], found


def test_workbench_imports_only_from_its_own_layer_or_below():
    found = layer_problems(ROOT / "workbench", LAYERS)
    assert not found, "\n".join(found)


def test_every_module_is_seen():
    """The graph covers the whole package (a parser that skipped files would find no problems)."""
    g = import_graph(ROOT / "workbench")
    on_disk = {p for p in (ROOT / "workbench").rglob("*.py")}
    assert len(g["modules"]) == len(on_disk)
    assert ("workbench.trainer", "workbench.rollout") in g["edges"]
