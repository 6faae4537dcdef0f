"""The three layers and the direction of their imports: the op library <- the models (memops.nn) <- the
application (memops.app). Read from the source with ast (every import, lazy ones inside functions
too), and `import memops` checked in a fresh interpreter."""

import ast
import json
import os
import subprocess
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "memops")
LAYERS = {"op library": 0, "models": 1, "application": 2}


def module_name(path):
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def modules():
    """{module name: path} of every .py file of the package."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                found[module_name(os.path.join(root, f))] = os.path.join(root, f)
    return found


MODULES = modules()


def layer(name):
    """The layer of a module. memops/tasks.py and memops/data.py keep old names for the application's
    packages, and `python -m memops` is its command line; the package root is the facade of the two
    lower layers (tested separately below)."""
    if name.startswith(("memops.app", "memops.tasks", "memops.data")) or name == "memops.__main__":
        return "application"
    if name.startswith("memops.nn"):
        return "models"
    return "op library"


def imports(name, path, top_level_only=False):
    """The memops modules `name` imports (absolute names; `from pkg import sub` counts as pkg.sub)."""
    tree = ast.parse(open(path).read(), path)
    is_package = path.endswith("__init__.py")
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("memops")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("memops"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "memops"))
def test_imports_point_down(name):
    mine = LAYERS[layer(name)]
    for target in imports(name, MODULES[name]):
        if target == "memops":  # the package root: `from .. import ops` resolves to memops.ops above
            continue
        assert LAYERS[layer(target)] <= mine, f"{name} ({layer(name)}) imports {target} ({layer(target)})"


def test_no_import_cycles():
    """Module-level imports form no cycle (a package importing its own submodules aside)."""
    graph = {n: {t for t in imports(n, p, top_level_only=True) if t in MODULES and not n.startswith(t + ".")}
             for n, p in MODULES.items()}
    state = {}

    def visit(n, stack):
        state[n] = "open"
        for t in graph[n]:
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t, stack + [t])
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n, [n])


def test_import_memops_loads_no_application_module():
    code = ("import json, sys, memops; print(json.dumps(sorted(m for m in sys.modules if m.startswith("
            "('memops.app', 'memops.tasks', 'memops.data', 'matplotlib')))))")
    env = dict(os.environ, MEMOPS_BACKEND="reference")  # no warning if the extension is not built
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_old_names_still_work():
    """memops.tasks and memops.data (lazily) and the console script's module are the application's."""
    import memops
    import memops.app.data
    import memops.app.tasks
    from memops.tasks.recall import Recall
    from memops.app.tasks.recall import Recall as Recall2

    assert memops.tasks is memops.app.tasks and memops.data is memops.app.data
    assert Recall is Recall2
    assert memops.nn.NTM is memops.nn.ntm.NTM
