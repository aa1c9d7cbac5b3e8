"""`import cnnlstm` stays light: no Lightning, PyAV, onnx, OpenVINO, matplotlib or click."""

import ast
import subprocess
import sys
from pathlib import Path

import cnnlstm

HEAVY = [
    "lightning",
    "pytorch_lightning",
    "av",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "matplotlib",
    "click",
    "safetensors",
]


def test_import_pulls_no_optional_dependency():
    code = f"import sys, cnnlstm; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported by `import cnnlstm`: {out.stdout.strip()}"


def test_inference_apps_need_no_lightning():
    apps = ["evaluate", "predict", "forecast", "anomaly", "stream", "plots", "demo"]
    code = (
        f"import sys, importlib; [importlib.import_module('cnnlstm.apps.' + a) for a in {apps!r}]; "
        "import cnnlstm.run, cnnlstm.export; print(','.join(m for m in ('lightning', 'pytorch_lightning') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Lightning imported by the inference apps: {out.stdout.strip()}"


def test_public_names_are_exported():
    import cnnlstm

    for name in cnnlstm.__all__:
        assert hasattr(cnnlstm, name), name
    assert issubclass(cnnlstm.ShapeError, ValueError)


def test_missing_extra_names_the_extra(monkeypatch):
    import pytest

    from cnnlstm.errors import MissingDependencyError, require

    monkeypatch.setitem(sys.modules, "definitely_not_here_pkg", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'cnnlstm\[video\]'"):
        require("definitely_not_here_pkg", "video", "decoding video")


# ----------------------------------------------------------------------------- the import graph, lazy imports included

SRC = Path(cnnlstm.__file__).parent
# cycles other parts of the redesign remove; delete an entry when its cycle is gone
KNOWN_CYCLES: list[set[str]] = []


def _modules() -> dict[str, Path]:
    def name(p: Path) -> str:
        parts = ["cnnlstm", *p.relative_to(SRC).with_suffix("").parts]
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    return {name(p): p for p in SRC.rglob("*.py")}


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its file (inside functions too)."""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = ".".join([*base[: len(base) - node.level + 1], *([node.module] if node.module else [])])
            target = target if node.level else node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("cnnlstm") and name != module:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; a package's ``__init__`` re-exporting its own submodules is no edge."""
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    return {
        m: {t for t in ts if not (modules[m].name == "__init__.py" and t.startswith(m + "."))}
        for m, ts in graph.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or w != v:
                w = stack.pop()
                component.add(w)
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports():
    graph = _graph()
    assert "cnnlstm.shapes.guard" in graph["cnnlstm.layers.time_distributed"]
    assert "cnnlstm.shapes" in graph["cnnlstm.cli.doctor"]  # `from ..shapes import diagnose` inside a command
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle_lazy_imports_included():
    new = [sorted(c) for c in _cycles(_graph()) if c not in KNOWN_CYCLES]
    assert new == [], f"import cycles: {new}"


def test_the_shape_doctor_imports_no_layer():
    """shapes/ reads attributes of modules (takes_lengths, per_step); it never imports cnnlstm's layers."""
    layers = ("cnnlstm.layers", "cnnlstm.backbones", "cnnlstm.model")
    graph = _graph()
    for module in [m for m in graph if m == "cnnlstm.shapes" or m.startswith("cnnlstm.shapes.")] + [
        "cnnlstm._messages"
    ]:
        bad = sorted(t for t in graph[module] if t.startswith(layers))
        assert bad == [], f"{module} imports {bad}"
