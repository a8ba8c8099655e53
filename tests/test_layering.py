"""kbert's imports go down its layers (docs/DESIGN.md, "Layers"): parses every module's
imports, top level and inside functions, and fails on an import of a higher layer, on a
circle, or on a function-level kbert import without a `# lazy:` reason."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "kbert"

# Lowest first. A module may import modules of its own layer or of any lower one; within a
# layer the graph must have no circle. The first entry that prefixes a module names its
# layer (the longest prefix wins).
LAYERS = (
    ("kbert", "kbert._lazy", "kbert.errors", "kbert.config"),
    ("kbert.io",),
    ("kbert.convert",),
    ("kbert.layers",),
    ("kbert.models",),
    ("kbert.text",),
    ("kbert.data",),
    ("kbert.tasks",),
    ("kbert.training",),
    ("kbert.glue",),
    ("kbert.export",),
    ("kbert.serving",),
    ("kbert.beam",),  # jobs on Apache Beam: batch inference, pre-training shards
    ("kbert.finetuning",),  # the public fine-tuning API (a re-export of kbert.training)
    ("kbert.cli",),
)

# Upward imports that are deliberate, each with its reason (module, imported).
ALLOWED_UPWARD = {
    # `kbert.export.tflite.TFLiteModel`, the runner's name before it moved to serving; a
    # deprecated alias resolved on first use.
    ("kbert.export.tflite", "kbert.serving.tflite_runtime"),
}


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layering.py LAYERS")
    return best


def _imports(module: str, path: pathlib.Path):
    """(imported kbert module, line, at top level?, marked lazy?) for each import."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                     for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "kbert" or name.startswith("kbert."):
                yield name, node.lineno, node.col_offset == 0, _marked(lines, node.lineno)


def _marked(lines: list[str], lineno: int) -> bool:
    """A `# lazy:` comment on the import's line or heading its block of imports."""
    i = lineno - 1
    if "# lazy:" in lines[i]:
        return True
    i -= 1
    while i >= 0:
        text = lines[i].strip()
        if text.startswith("# lazy:"):
            return True
        if text.startswith(("from ", "import ", "#")) or text.endswith((",", "(")) or (
                lines[i].startswith(" " * 8) and text.endswith(")")):
            i -= 1
            continue
        return False
    return False


def _edges():
    for module, path in sorted(MODULES.items()):
        for target, lineno, top, lazy in _imports(module, path):
            # `kbert.x.y` where y is a name in module kbert.x: the module is kbert.x
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target != module:
                yield module, target, path, lineno, top, lazy


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_only_go_down():
    upward = []
    for module, target, path, lineno, _, _ in _edges():
        if layer_of(target) > layer_of(module) and (module, target) not in ALLOWED_UPWARD:
            upward.append(f"{path.relative_to(ROOT.parent)}:{lineno} ({module}, layer "
                          f"{layer_of(module)}) imports {target} (layer {layer_of(target)})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_circles():
    graph: dict[str, set[str]] = {}
    for module, target, *_ in _edges():
        if (module, target) not in ALLOWED_UPWARD:
            graph.setdefault(module, set()).add(target)
    # A package's __init__ re-exporting its own submodules is not a circle through them.
    for module in list(graph):
        graph[module] = {t for t in graph[module]
                         if not (t.startswith(module + ".") and MODULES[module].name ==
                                 "__init__.py")}
    seen, stack, circles = set(), [], []

    def visit(node):
        if node in stack:
            circles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    described = [" -> ".join(f"{m} ({MODULES[m].relative_to(ROOT.parent)})" for m in c)
                 for c in circles]
    assert not circles, "import circles:\n" + "\n".join(described)


def test_function_level_imports_are_marked():
    unmarked = [f"{path.relative_to(ROOT.parent)}:{lineno} imports {target}"
                for module, target, path, lineno, top, lazy in _edges()
                if not top and not lazy]
    assert not unmarked, ("kbert imports inside functions need a `# lazy: <why>` comment "
                          "(or belong at the top of the file):\n" + "\n".join(unmarked))


@pytest.mark.parametrize("source, expected", [
    ("import kbert.io.atomic\n", "kbert.io.atomic"),
    ("from kbert.layers import TransformerBlock\n", "kbert.layers"),
    ("from kbert.cli import finetune\n", "kbert.cli.finetune"),
])
def test_import_parser_resolves_modules(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [t for t, *_ in _imports("kbert.x", path)] == [expected]


def test_checker_catches_an_upward_import():
    assert layer_of("kbert.models.encoder") < layer_of("kbert.tasks.heads")
    assert layer_of("kbert.cli.app") == len(LAYERS) - 1
