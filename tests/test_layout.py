"""The package's shape: no import circles among module-level imports; handlers stay below the core."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "keras_slim"


def _module_imports():
    """module -> keras_slim modules it imports at module level (not inside functions)."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("keras_slim",) + path.relative_to(ROOT).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If):  # TYPE_CHECKING blocks are annotations only
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_slim"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if (ROOT.parent / (full.replace(".", "/") + ".py")).exists()
                             else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("keras_slim"))
        graph[name] = {d for d in deps if d != name}
    return graph


def test_no_import_cycles():
    graph = _module_imports()
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_handlers_never_import_the_coupling_or_planner():
    graph = _module_imports()
    for m, deps in graph.items():
        if m.startswith("keras_slim.handlers"):
            bad = {d for d in deps if d.split(".")[1] in ("coupling", "planning", "pruning",
                                                           "surgery", "graph")}
            assert not bad, f"{m} imports {bad}"


def test_core_never_imports_extensions():
    graph = _module_imports()
    core = ("graph", "coupling", "criteria", "planning", "plan_data", "plan_checks", "accounting", "targets", "sensitivity", "surgery",
            "fold_constants", "tracing", "errors", "_images", "_jsonio",
            "_keras", "layers", "pruning", "handlers", "regularizers", "sparsity", "state",
            "taylor", "_gradients", "latency", "trace_check")
    extensions = ("export", "qat", "cli", "training", "models")
    for m, deps in graph.items():
        if m.split(".")[1] in core if "." in m else False:
            bad = {d for d in deps if len(d.split(".")) > 1 and d.split(".")[1] in extensions}
            assert not bad, f"core module {m} imports extension {bad}"


import re  # noqa: E402  (appended section)

# Keras internals: `keras.src` imports and private attributes of Keras objects.
_KERAS_INTERNALS = re.compile(
    r"keras\.src|\b_(inbound_nodes|outbound_nodes|keras_history|inputs_struct|outputs_struct"
    r"|build_shapes_dict)\b")


def test_keras_internals_only_in_keras_module():
    """`keras.src` and private Keras attributes appear in keras_slim/_keras.py only."""
    hits = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "_keras.py":
            continue
        hits += [f"{rel}:{i}: {line.strip()}" for i, line in
                 enumerate(_code_lines(path), 1) if _KERAS_INTERNALS.search(line)]
    assert not hits, ("Keras internals outside keras_slim/_keras.py; add a small named "
                      "function there instead:\n" + "\n".join(hits))


def _code_lines(path):
    """The file's lines with comments blanked (a comment may name keras.src; code may not)."""
    import tokenize

    lines = path.read_text().splitlines()
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                lines[row - 1] = lines[row - 1][:col]
    return lines
