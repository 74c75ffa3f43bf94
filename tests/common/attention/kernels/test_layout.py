"""Every kernel folder of the attention core keeps one layout (DESIGN.md, "Layout"):

    module.py     the nn.Module layer and the public dispatching op (impl="auto" | "torch" | "triton")
    reference.py  torch only: the spec
    kernels.py    @triton.jit functions only (or kernels_<part>.py, shared jit helpers under public names)
    triton.py     host-side launches and the autograd Function
    __init__.py   the public names

Read from the source (no import), so the rules hold on a machine without triton too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import common.attention

ROOT = Path(common.attention.__file__).parent
FOLDERS = sorted(p.parent for p in ROOT.glob("*/triton.py"))
ROLES = {"__init__.py", "module.py", "reference.py", "triton.py"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _top_level_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def _is_triton_jit(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(target) == "triton.jit"


def test_the_three_kernel_folders_are_found():
    assert {p.name for p in FOLDERS} >= {"gla", "routing_bilevel", "deformable_ms"}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_files_have_the_fixed_roles(folder):
    files = {p.name for p in folder.glob("*.py")}
    kernels = {name for name in files if name == "kernels.py" or name.startswith("kernels_")}
    assert files >= ROLES, f"{folder.name}: missing {ROLES - files}"
    assert kernels, f"{folder.name}: no kernels.py"
    assert files == ROLES | kernels, f"{folder.name}: files outside the layout: {files - ROLES - kernels}"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_kernel_files_hold_only_jit_functions(folder):
    for path in sorted(folder.glob("kernels*.py")):
        for node in _tree(path).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # the docstring
                continue
            assert isinstance(node, ast.FunctionDef), f"{path.name}:{node.lineno}: only @triton.jit functions"
            assert any(_is_triton_jit(d) for d in node.decorator_list), f"{path.name}: {node.name} is not jit"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_triton_stays_lazy(folder):
    """Only triton.py and the kernel files may import triton at import time; module.py reaches triton.py
    inside the dispatching op, so `import common.attention` works without triton."""
    package = f"common.attention.{folder.name}"
    for name in ("__init__.py", "module.py", "reference.py"):
        imports = _top_level_imports(_tree(folder / name))
        assert not {i for i in imports if i == "triton" or i.startswith("triton.")}, f"{name} imports triton"
        assert not {i for i in imports if i.startswith(f"{package}.kernels") or i == f"{package}.triton"}, name
    reference = _top_level_imports(_tree(folder / "reference.py"))
    assert not {i for i in reference if i.startswith(package)}, "reference.py is torch only"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_no_file_imports_another_files_private_names(folder):
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("common.attention."):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
