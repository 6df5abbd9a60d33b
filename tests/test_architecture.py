"""The package's own imports, read from its source: records flow one way, so no module (and no folder) imports one
that imports it back, directly or round a loop, a lazy import inside a function included. And its rooms stay a
size a newcomer reads."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamer"


def imports() -> dict[str, set[str]]:
    """module -> the streamer modules it imports anywhere in its file."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    arrows = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("streamer"):
                # `from streamer.cli import run`: the module streamer.cli.run; `from streamer.records import Frame`:
                # streamer.records itself
                named = {f"{node.module}.{a.name}" for a in node.names}
                found |= (named & modules.keys()) | ({node.module} if named - modules.keys() else set())
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        arrows[name] = {m for m in found if m in modules and m != name}
    return arrows


def circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Every loop of imports, as the modules on it (Tarjan's strongly connected components)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in arrows[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(arrows):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_its_way_back_to_itself():
    arrows = imports()
    assert len(arrows) > 40 and sum(map(len, arrows.values())) > 150  # the package was read, not an empty folder
    assert circles(arrows) == []


def test_the_folders_import_one_way():
    """A folder (the pipeline, the model, the outputs, recording, the web side, the annotation tools, the cluster)
    may import from another only if that one imports nothing back from it."""
    arrows = imports()
    folder = lambda name: ".".join(name.split(".")[:2])  # noqa: E731 - streamer.outputs.store -> streamer.outputs
    between: dict[str, set[str]] = {}
    for source, targets in arrows.items():
        between.setdefault(folder(source), set()).update(folder(t) for t in targets if folder(t) != folder(source))
    for targets in list(between.values()):
        for target in targets:
            between.setdefault(target, set())
    assert {"streamer.pipeline", "streamer.outputs", "streamer.web"} <= set(between)
    assert circles(between) == []


def test_a_loop_of_imports_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_class_over_250_lines_and_no_function_over_70():
    """Rooms a newcomer can read: a class that grows past 250 lines, or a function past 70, is split by what it
    does (as `SourceRun` into its file and camera loops over the steps)."""
    too_big = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if (isinstance(node, ast.ClassDef) and lines > 250) or (
                    isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines > 70):
                too_big.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} {lines} lines")
    assert too_big == []
    assert len(list(PACKAGE.rglob("*.py"))) > 60  # the package was read
