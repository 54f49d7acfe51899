"""The layout of the house: no import circles between our modules (deferred imports inside
functions count too), and training code imports nothing from the board package."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("brevitas_models", "finn_build", "deploy", "medimage", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict:
    """{module: {our modules it imports}}; ``from pkg import mod`` counts as importing mod."""
    files = {_module_name(p): p for pkg in PACKAGES if (ROOT / pkg).is_dir()
             for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                subs = [f"{target}.{a.name}" for a in node.names]
                modules = [s for s in subs if s in files]
                deps.update(modules)
                if len(modules) < len(subs):
                    deps.add(target)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert len(graph) > 50 and "finn_build.pipeline" in graph["finn_build.__main__"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_training_imports_nothing_from_the_board_package():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d.split(".")[0] == "deploy")
           for m, deps in graph.items() if m.startswith("brevitas_models")}
    assert {m: d for m, d in bad.items() if d} == {}
