"""Dependencies run one way (DESIGN.md): every import of every module of the package, read with
`ast` (module level and inside functions alike), against the rule of its layer.

- interop imports nothing of ours but interop, and its contract modules import no torch at
  module level (a CUDA ring may import it when it is created);
- kernels import nothing of ours but kernels;
- model imports only model, kernels and interop; its training may also read the reference engine
  and engine captures (DESIGN: "Training may use the reference engine and engine captures as data
  sources");
- service imports only service, model, interop and kernels (never an engine or a tool), except
  that its recorder writes captures of a session's inputs with the one capture writer, which
  lives with the format in engine_plugins/capture.py (and nothing else of engine_plugins);
- engine_plugins import only engine_plugins and interop (never the service or the model);
- tools (the command line, demo, bench) may import anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package
LAYERS = {"interop", "kernels", "model", "service", "engine_plugins", "tools"}
ALLOWED = {
    "interop": {"interop"},
    "kernels": {"kernels"},
    "model": {"model", "kernels", "interop"},
    "service": {"service", "model", "interop", "kernels"},
    "engine_plugins": {"engine_plugins", "interop"},
}
EXTRA = {("model", "training"): {"engine_plugins"},  # sub-folder or file -> what it may import besides
         ("service", "recorder.py"): {"engine_plugins"}}
# Within such an exception, the only modules it may name (None: any of the layer).
EXTRA_MODULES = {("service", "recorder.py"): {"engine_plugins.capture"}}
# The contract: what the engine side imports. None may import torch at module level.
CONTRACT = ("interop/__init__.py", "interop/limits.py", "interop/errors.py", "interop/layout.py",
            "interop/protocol.py", "interop/shm.py", "interop/client.py")


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in LAYERS:
            yield rel, ast.parse(path.read_text(), str(rel))


def _ours(rel: Path, node: ast.AST) -> list[str]:
    """The top-level folders of ours that an import names ('' for the package root)."""
    package = list(rel.parts[:-1]) if rel.name != "__init__.py" else list(rel.parts[:-1])
    out = []
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            if node.level - 1 > len(package):
                raise AssertionError(f"{rel}: relative import above the package")
            target = base + (node.module.split(".") if node.module else [])
            if target:
                out.append(target[0])
            else:  # `from .. import x`: the names are what is imported
                out += [a.name.split(".")[0] for a in node.names]
        elif node.module and node.module.split(".")[0] == "streamstyle":
            parts = node.module.split(".")[1:]
            out += [parts[0]] if parts else [a.name for a in node.names]
    elif isinstance(node, ast.Import):
        for a in node.names:
            parts = a.name.split(".")
            if parts[0] == "streamstyle" and len(parts) > 1:
                out.append(parts[1])
    return [o for o in out if o in LAYERS]


def _violations():
    found = []
    for rel, tree in _modules():
        layer = rel.parts[0]
        if layer not in ALLOWED:
            continue
        allowed = ALLOWED[layer] | EXTRA.get(tuple(rel.parts[:2]), set())
        only = EXTRA_MODULES.get(tuple(rel.parts[:2]))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _ours(rel, node):
                    if target not in allowed:
                        found.append(f"{rel}:{node.lineno} ({layer}) imports {target}")
                    elif only is not None and target not in ALLOWED[layer] and _module_of(rel, node) not in only:
                        found.append(f"{rel}:{node.lineno} ({layer}) imports {_module_of(rel, node)}")
    return found


def _module_of(rel: Path, node: ast.AST) -> str:
    """The dotted module an import names, below the package (`engine_plugins.capture`)."""
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = list(rel.parts[:-1])[: len(rel.parts) - node.level]
            return ".".join(base + (node.module.split(".") if node.module else []))
        return node.module.removeprefix("streamstyle.")
    return node.names[0].name.removeprefix("streamstyle.")


def test_dependencies_run_one_way():
    assert _violations() == []


def test_the_rule_would_catch_a_wrong_import(tmp_path):
    """The walker sees relative and absolute imports, at module level and inside functions."""
    cases = {
        "from ..model.layout import x": "model", "from ...service import y": "service",
        "import streamstyle.tools.cli": "tools", "from streamstyle.model import errors": "model",
        "def f():\n    from ..engine_plugins import capture": "engine_plugins",
    }
    for source, target in cases.items():
        rel = Path("interop/reference_engine/x.py") if source.startswith("from ...") else Path("interop/x.py")
        nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert _ours(rel, nodes[0]) == [target], source
    assert _ours(Path("interop/x.py"), ast.parse("from .errors import E").body[0]) == ["interop"]


@pytest.mark.parametrize("module", CONTRACT)
def test_the_contract_imports_no_torch_at_module_level(module):
    tree = ast.parse((ROOT / module).read_text())
    for node in tree.body:  # module level only: a function may import torch for a CUDA ring
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any(n.split(".")[0] in ("torch", "triton", "cupy") for n in names), (module, node.lineno)


def test_the_engine_side_client_imports_without_torch_quickly():
    """`import streamstyle.interop.client` pulls in neither torch nor the model nor the service,
    and takes well under a second (the issue's goal: 0.3 s; measured, best of three)."""
    code = ("import sys, time; t = time.perf_counter(); import streamstyle.interop.client; "
            "t = time.perf_counter() - t; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton') "
            "or m.startswith(('streamstyle.model', 'streamstyle.service', 'streamstyle.kernels', 'streamstyle.tools'))); "
            "print(t); print(','.join(bad))")
    times = []
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=ROOT.parent)
        assert run.returncode == 0, run.stderr
        t, bad = (run.stdout.splitlines() + [""])[:2]
        assert bad == "", f"the client imported {bad}"
        times.append(float(t))
    # 0.3 s is the target on a quiet machine; the bound here leaves room for a loaded CI box.
    assert min(times) < 1.0, times
