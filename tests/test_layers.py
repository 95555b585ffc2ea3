"""The house rule, read from the AST: each layer imports only from the layers below it.

  core -> config -> models -> data -> training -> search -> evaluation -> jobs
  -> research -> main

No import cycles, counting imports inside functions; at most three first-party
imports inside functions (each for an optional heavy dependency); no module
over 450 lines.
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "optical_jax"
LAYERS = ("core", "config", "models", "data", "training", "search", "evaluation", "jobs",
          "research", "main")


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


def _imports(name: str, path: pathlib.Path, modules) -> list[tuple[str, bool, int]]:
  """(imported first-party module, inside a function?, line) of every import."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
           for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    else:
      continue
    out += [(t, id(node) in inner, node.lineno) for t in targets if t in modules and t != name]
  return out


def _layer(name: str) -> int:
  top = name.split(".")[1] if "." in name else "main"
  if top not in LAYERS:
    raise AssertionError(f"{name}: not in any layer of {LAYERS}; add it to one")
  return LAYERS.index(top)


def test_every_module_sits_in_a_layer():
  for name in _modules():
    if name != "optical_jax":
      _layer(name)


def test_layers_import_downward_only():
  modules = _modules()
  upward = []
  for name, path in modules.items():
    if name == "optical_jax":
      continue
    for target, _, line in _imports(name, path, modules):
      if target != "optical_jax" and _layer(target) > _layer(name):
        upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} imports {target}")
  assert not upward, "imports that climb the layers:\n" + "\n".join(upward)


def test_no_import_cycles():
  modules = _modules()
  edges = {m: {t for t, _, _ in _imports(m, p, modules)} for m, p in modules.items()}
  # A package importing its own submodules (re-exports) is not a cycle.
  for m in edges:
    edges[m] = {t for t in edges[m] if not t.startswith(m + ".")}
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for t in sorted(edges[m]):
      if state.get(t) == 1:
        raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
      if t not in state:
        visit(t)
    stack.pop()
    state[m] = 2

  for m in sorted(edges):
    if m not in state:
      visit(m)


def test_few_imports_inside_functions_and_short_modules():
  modules = _modules()
  local = [f"{p.relative_to(PACKAGE.parent)}:{line}" for m, p in modules.items()
           for _, inside, line in _imports(m, p, modules) if inside]
  assert len(local) <= 3, f"first-party imports inside functions: {local}"
  long = {str(p.relative_to(PACKAGE.parent)): n for p in modules.values()
          if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
  assert not long, f"modules over 450 lines: {long}"
