"""The house stays easy to read: small modules and functions, a thin CLI, imports that flow one way."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "astrotf"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_CLI_LINES = 350


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_no_function_is_over_80_lines():
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = length
    assert not long, long


def test_the_cli_only_parses_and_calls():
    cli = [PACKAGE / "cli.py"] if (PACKAGE / "cli.py").exists() else sorted((PACKAGE / "cli").glob("*.py"))
    for path in cli:
        assert len(path.read_text().splitlines()) <= MAX_CLI_LINES, path
    # no numerical work in the CLI: it never imports numpy or TensorFlow itself
    for path in cli:
        imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"numpy", "tensorflow", "keras"}, (path, imported)


# Stages in import order: a module may import from its own stage and the ones before it, never after.
# The models' registry is TensorFlow-free, so the configuration (after it) checks recipes against it;
# infer (tiling) comes before the backends that load models, which give their tile options in its terms.
STAGES = ["errors", "constants", "checks", "quantise", "io", "metrics", "layers", "models", "config", "data", "losses",
          "ensemble", "runs", "train", "infer", "backends", "export", "evaluate", "soft_restore", "restore", "sky_level", "batch", "api", "cli"]


def _stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "astrotf" and parts[1] in STAGES else None


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    relative = path.relative_to(PACKAGE)
    own = relative.parts[0].removesuffix(".py")
    if own not in STAGES:
        return
    later = set(STAGES[STAGES.index(own) + 1:])
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test).endswith("TYPE_CHECKING") for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            assert _stage(name) not in later, f"{relative} imports {name}, a later stage"


def test_infer_and_evaluate_never_import_training():
    code = ("import sys, astrotf.infer, astrotf.evaluate, astrotf.batch; "
            "print(sorted(m for m in sys.modules if m.startswith(('astrotf.train', 'astrotf.data.pipeline'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
