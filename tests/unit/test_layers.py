"""The package's folders follow the data flow, and nothing imports upward (docs/architecture.md draws the same order).

A module may import from its own layer and from the layers listed before it, never after: the detector's core never
depends on the daemon, the daemon never on the offline tools. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import streamrnn

# Lowest first. Each entry is a top-level name under streamrnn/ (a folder or a module).
LAYERS = (
    "core",  # records passed between stages, per-row arrays, timestamps
    "config",  # settings
    "ingest",  # Kafka clients, decoding, file readers
    "model",  # the network, its batched stepper, input features
    "detect",  # the pipeline: per-stream state, scorers, evidence, events
    "emit",  # encoders of events, scores, dead letters
    "training",  # windows, data and the training loop
    "configure",  # settings -> each part's typed config (the one place that reads Settings for them)
    "checkpoint",  # snapshot format and stores
    "lifecycle",  # artifacts, registry, cold start, hot swap, drift, retrain
    "runtime",  # the daemon, the trainer process, replay, health, metrics, logs
    "tools",  # simulate, evaluate, report, reference, watch
    "cli",
)
PACKAGE = Path(streamrnn.__file__).parent


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "streamrnn" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "streamrnn":  # from streamrnn import x
                found += [(node.lineno, f"streamrnn.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _modules() -> list[Path]:
    """Every module below the package root (the root's own __init__ and __main__ only name the version and the CLI),
    package __init__ files that hold code included."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if not (p.parent == PACKAGE and p.name in ("__init__.py", "__main__.py"))
                  and not (p.name == "__init__.py" and not p.read_text().strip()))


def test_every_module_sits_in_a_layer():
    for path in _modules():
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert top in LAYERS, f"{path.relative_to(PACKAGE)} is in no layer; add its folder to LAYERS and the docs"


def test_nothing_imports_upward():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in _modules():
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for line, module in _imports(path):
            layer = _layer(module)
            if layer is not None and layer in rank and rank[layer] > rank[own]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {module} ({layer})")
    assert not upward, "imports upward:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    # The walk must find imports inside functions, or the test above would pass on a tree that breaks the rule.
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from streamrnn.runtime.daemon import Daemon\n")
    assert _imports(path) == [(2, "streamrnn.runtime.daemon")]


def test_modules_and_classes_stay_small():
    # A newcomer reads a module in one sitting: a module that grows past this splits by what it owns.
    too_big = []
    for path in _modules():
        source = path.read_text()
        if source.count("\n") > 400:
            too_big.append(f"{path.relative_to(PACKAGE)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                too_big.append(f"{path.relative_to(PACKAGE)}: class {node.name}, {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, "over the size limits (400 lines a module, 250 a class):\n" + "\n".join(too_big)
