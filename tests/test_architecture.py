"""The import rules of ARCHITECTURE.md, checked on the source (static imports and dynamic ones).

Layers, bottom up: `common.errors` -> `common.attention` -> `common.utils`, `common.data`, `common.layers` ->
the domain folders (`common.vision`, `common.detection`, ...) -> `common.pipeline` -> `apps.<app>`. An
import may only point down. Each rule is also run on a small made-up file that breaks it, so that a
checker that finds nothing cannot pass unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Shared code that every layer above the attention core may use; it imports nothing of the domains or the pipeline.
FOUNDATION = ("common.errors", "common.utils", "common.data", "common.layers", "common.attention")
# Calls that import a module named by a string: `common` must not reach `apps` through them either.
DYNAMIC_IMPORTS = {"import_module", "__import__", "get_class", "get_method", "get_object", "locate", "_locate"}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _string_prefix(node: ast.expr) -> str | None:
    """The literal text a string argument starts with (an f-string's leading literal part)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports, statically or through a dynamic import call with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            prefix = _string_prefix(node.args[0])
            if name in DYNAMIC_IMPORTS and prefix:
                found.add(prefix.rstrip("."))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _common_but_not(name: str, *allowed: str) -> bool:
    return _within(name, "common") and not any(_within(name, a) for a in allowed)


def _other_app(module: str, name: str) -> bool:
    return _within(module, "apps") and _within(name, "apps") and name.split(".")[:2] != module.split(".")[:2]


def _other_domain(module: str, name: str) -> bool:
    return _domain(module) is not None and _domain(name) not in (None, _domain(module))


# (rule, does `module` importing `name` break it?)
RULES = [
    ("common never imports apps", lambda m, n: _within(m, "common") and _within(n, "apps")),
    ("no app imports another app", _other_app),
    (
        "common.attention imports only common.errors of common",
        lambda m, n: _within(m, "common.attention") and _common_but_not(n, "common.attention", "common.errors"),
    ),
    (
        "only apps and the entry points import common.pipeline",
        lambda m, n: _common_but_not(m, "common.pipeline") and _within(n, "common.pipeline"),
    ),
    (
        "shared foundations import no domain",
        lambda m, n: any(_within(m, f) for f in FOUNDATION) and _common_but_not(n, *FOUNDATION),
    ),
    ("a domain imports no other domain", _other_domain),
]


def violations(module: str, imports: set[str]) -> list[str]:
    """The rules of ARCHITECTURE.md that `module` breaks by importing `imports`."""
    return [
        f"{rule}: {module} imports {name}" for name in sorted(imports) for rule, breaks in RULES if breaks(module, name)
    ]


def _domain(name: str) -> str | None:
    """`common.<x>` for a domain folder (not a foundation, not the pipeline), else None."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "common":
        return None
    top = ".".join(parts[:2])
    if top == "common.pipeline" or any(_within(top, f) for f in FOUNDATION):
        return None
    return top if (REPO / "common" / parts[1]).is_dir() else None


SOURCES = sorted(p for top in ("common", "apps") for p in (REPO / top).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_module_keeps_the_import_rules(path):
    module = module_name(path)
    imports = imported_modules(path.read_text(), module, is_package=path.name == "__init__.py")
    assert violations(module, imports) == []


def test_every_package_is_checked():
    assert {module_name(p).split(".")[0] for p in SOURCES} == {"common", "apps"}
    assert len(SOURCES) > 100  # the walk found the tree, not an empty folder


BROKEN = [
    ("common.pipeline.predict", "import importlib\nimportlib.import_module(f'apps.{app}.x')", "never imports apps"),
    ("common.vision.data", "from apps.biformer.model import BiFormer", "never imports apps"),
    ("apps.biformer.model", "from apps.fmvit.blocks import Mixer", "another app"),
    ("common.attention.softmax", "from common.layers import TransformerBlock", "only common.errors"),
    ("common.detection.module", "from common.pipeline.files import write_json", "common.pipeline"),
    ("common.detection.coco", "from ..vision.datasets import EpochShuffle", "no other domain"),
    ("common.data.cards", "from common.timeseries.panel import Panel", "import no domain"),
    ("common.utils.figures", "from hydra.utils import get_class\nget_class('apps.x.Y')", "never imports apps"),
]


@pytest.mark.parametrize(("module", "source", "rule"), BROKEN, ids=[b[0] for b in BROKEN])
def test_each_rule_catches_its_violation(module, source, rule):
    found = violations(module, imported_modules(source, module))
    assert any(rule in v for v in found), found


def test_allowed_imports_pass():
    allowed = [
        ("apps.biformer.model", "from common.attention import build\nfrom apps.biformer.routing import route"),
        ("common.detection.module", "from common.utils.schedulers import with_scheduler\nfrom . import matcher"),
        ("common.pipeline.train", "from common.vision.data import X\nimport torch"),
        ("common.attention.gla.module", "from common.errors import ConfigError\nfrom .reference import gla"),
    ]
    for module, source in allowed:
        assert violations(module, imported_modules(source, module)) == [], module
