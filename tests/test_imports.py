"""Import direction: every module imports only its own layer or the layers below it.

Data flows one way through the factory, and so do imports. The order, bottom first:

  foundation         settings (every setting), autotune (the machine), logs, the package's version
  database           schema, migrations, queries: what every node and engine coordinates through
  process model      cluster/: nodes, engines, supervisor, runner. Engines import EngineContext from
                     here, and cluster/ names the engines only as "module:function" strings, so it
                     sits below them and never imports them
  data and training  collect, text, sources, dataset, model, train: the engines' work (they use each
                     other's pieces: one layer)
  models in use      serve, evaluate, registry, export; and the web's request plumbing (auth, the app
                     context, the request guards), which the serving routers use too
  web                the FastAPI app and its routers
  entry points       launch (starting a node), the command line

A package that is not in the list fails the test: place it where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("aifactory", "aifactory.settings", "aifactory.autotune", "aifactory.logs")),
    ("database", ("aifactory.db",)),
    ("process model", ("aifactory.cluster",)),
    (
        "data and training",
        (
            "aifactory.collect",
            "aifactory.text",
            "aifactory.sources",
            "aifactory.dataset",
            "aifactory.model",
            "aifactory.train",
            "aifactory.chat",
            # The chat template (pure: no imports of its own): chat tuning trains on exactly it.
            "aifactory.serve.template",
        ),
    ),
    (
        "models in use",
        (
            "aifactory.serve",
            "aifactory.evaluate",
            "aifactory.registry",
            "aifactory.export",
            "aifactory.ops",
            "aifactory.web.auth",
            "aifactory.web.context",
            "aifactory.web.errors",
            "aifactory.web.guards",
        ),
    ),
    ("web", ("aifactory.web",)),
    ("entry points", ("aifactory.launch", "aifactory.cli", "aifactory.__main__")),
]


def layer_of(module: str) -> int | None:
    """The layer of the longest listed prefix of `module` (aifactory.web.auth before aifactory.web)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (index, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every aifactory import in the file, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "aifactory"]


def test_no_module_imports_a_layer_above_it() -> None:
    upward, unplaced = [], set()
    for path in sorted((SRC / "aifactory").rglob("*.py")):
        module = module_name(path)
        mine = layer_of(module)
        if mine is None:
            unplaced.add(module)
            continue
        for line, imported in imports(path):
            theirs = layer_of(imported)
            if theirs is not None and theirs > mine:
                where = f"{path.relative_to(SRC)}:{line} ({LAYERS[mine][0]})"
                upward.append(f"{where} imports {imported} ({LAYERS[theirs][0]})")
    assert not unplaced, f"modules in no layer (add them to LAYERS): {sorted(unplaced)}"
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check is real: a database module importing the text pipeline is flagged."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from aifactory.text.pipeline import store\n")
    assert imports(bad) == [(2, "aifactory.text.pipeline")]
    order = [
        "aifactory.settings",
        "aifactory.db.policies",
        "aifactory.cluster.context",
        "aifactory.collect.engine",
        "aifactory.web.auth",
        "aifactory.web.app",
        "aifactory.cli",
    ]
    assert [layer_of(module) for module in order] == list(range(len(LAYERS)))
