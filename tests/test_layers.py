"""The layer contract (issue 19): who may import whom in ``src/ferry``, checked on the source.

The layers, bottom up (README "Layout"):

* Vocabulary: ``ferry.vocab`` (attributes, file types, NFS status, errno maps) imports
  nothing of Ferry; ``ferry.errors`` (the one error tree) imports only the vocabulary.
* Wire: ``ferry.xdr``, ``ferry.rpc`` (and ``ferry.segment``, the zero-copy data parts they
  carry) import nothing above them.
* Protocol: ``ferry.nfs3`` (NFS and MOUNT) imports the wire, the vocabulary and the backend
  contract (``ferry.backends.base``), nothing else of Ferry.
* Sans-IO: nothing in the wire or protocol layers imports sockets, threads, event loops
  or ``os``: the server layer supplies locks, key files and randomness.
* Backends import the vocabulary and their helpers, never the protocol (no import cycle
  with ``nfs3``), the server or the client.
* The client never imports the backends or the server, nor the faces over it.
* Faces and tools, top down: ``ferry.cli`` (may import anything); ``ferry.fuse`` and
  ``ferry.nfsfs`` (faces over the client: never the backends or the server, but for the
  mount's ``server.malloc`` tuning, nor each other); ``ferry.testing`` (test tools: never
  the CLI). The server never imports the client or a face.
* Runtime helpers shared by several layers (``ferry.loops``, ``ferry.workpool``,
  ``ferry.tripwire``) import nothing of Ferry; the top of the package holds only them,
  the vocabulary and the wire.
* No import cycles between modules (but inside ``ferry.client``, which issue 19 reshapes).

Every ``import`` in a module counts, also those inside functions or under
``TYPE_CHECKING``: a dependency is a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

VOCAB = ("ferry.vocab",)
WIRE = (*VOCAB, "ferry.errors", "ferry.xdr", "ferry.segment", "ferry.rpc")
PROTOCOL = (*WIRE, "ferry.nfs3", "ferry.backends.base")
NO_IO = ("socket", "selectors", "asyncio", "threading", "os", "multiprocessing", "subprocess")

ALLOWED: dict[str, tuple[str, ...]] = {
    # module prefix -> the Ferry modules (prefixes) it may import
    "ferry.vocab": (),
    "ferry.errors": VOCAB,
    "ferry.segment": (),
    "ferry.xdr": WIRE,
    "ferry.rpc": WIRE,
    "ferry.nfs3": PROTOCOL,
    "ferry.backends": (
        *VOCAB,
        "ferry.errors",
        "ferry.segment",
        "ferry.workpool",
        "ferry.tripwire",
        "ferry.backends",
    ),  # fmt: skip
    "ferry.loops": (),
    "ferry.workpool": (),
    "ferry.tripwire": (),
}
FACES = ("ferry.cli", "ferry.fuse", "ferry.nfsfs")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # module prefix -> the Ferry modules (prefixes) it must not import
    "ferry.client": ("ferry.backends", "ferry.server", *FACES, "ferry.testing"),
    "ferry.server": ("ferry.client", *FACES, "ferry.testing"),
    "ferry.fuse": ("ferry.backends", "ferry.server", "ferry.cli", "ferry.nfsfs", "ferry.testing"),
    "ferry.nfsfs": ("ferry.backends", "ferry.server", "ferry.cli", "ferry.fuse", "ferry.testing"),
    "ferry.testing": ("ferry.cli",),
}
EXCEPTIONS: dict[str, tuple[str, ...]] = {
    # module prefix -> imports allowed although FORBIDDEN names them
    "ferry.fuse": ("ferry.server.malloc",),  # glibc keeps freed buffers (mount tuning)
}
TOP_LEVEL = {
    # what src/ferry/ holds besides the layer packages: every module says why it is here
    "__init__.py",
    "__main__.py",
    "vocab.py",
    "errors.py",
    "xdr.py",
    "segment.py",
    "loops.py",
    "workpool.py",
    "tripwire.py",
    "py.typed",
}
PACKAGES = {"rpc", "nfs3", "backends", "server", "client", "cli", "fuse", "nfsfs", "testing"}
SANS_IO = ("ferry.xdr", "ferry.rpc", "ferry.nfs3")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))  # and `base.name`: `from ferry import loops`
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _rule(module: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    best = max((p for p in table if _within(module, (p,))), key=len, default=None)
    return None if best is None else table[best]


def _violations() -> list[str]:
    found = []
    for path in sorted((SRC / "ferry").rglob("*.py")):
        module = _module_name(path)
        allowed, forbidden = _rule(module, ALLOWED), _rule(module, FORBIDDEN)
        for line, imported in _imports(path):
            where = f"{path.relative_to(SRC)}:{line}: {module} imports {imported}"
            if imported == "ferry":
                continue  # the package itself; `from ferry import x` is listed as ferry.x
            if imported.startswith("ferry."):
                if allowed is not None and not _within(imported, allowed):
                    found.append(where)
                if (
                    forbidden is not None
                    and _within(imported, forbidden)
                    and not _within(imported, _rule(module, EXCEPTIONS) or ())
                ):
                    found.append(where)
            elif _within(module, SANS_IO) and _within(imported, NO_IO):
                found.append(where + " (sans-IO layer)")
    return found


def test_layers_import_only_downward() -> None:
    violations = _violations()
    assert not violations, "layer contract broken:\n" + "\n".join(violations)


def test_the_tree_reads_as_the_layers() -> None:
    """``src/ferry`` holds the layer packages and the few modules every layer shares; a
    face or a tool gets a package of its own (there were 14 flat modules, issue 19)."""
    entries = {p.name for p in (SRC / "ferry").iterdir() if p.name != "__pycache__"}
    assert entries == TOP_LEVEL | PACKAGES
    assert all((SRC / "ferry" / p / "__init__.py").is_file() for p in PACKAGES)


def _import_graph() -> dict[str, set[str]]:
    """Ferry module -> the Ferry modules it imports (``from pkg import mod`` counts as mod)."""
    modules = {_module_name(p): p for p in (SRC / "ferry").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for _, imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported not in ("", "ferry", name):
                deps.add(imported)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while (w := stack.pop()) != v:
                component.add(w)
            if component:
                found.append(component | {v})

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    """Modules import each other one way (``fuse.mount`` and ``fuse.ops`` did both ways); the
    client's cycle (its sync, files and paths modules) is reshaped by issue 19's third point."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]
    cycles = [c for c in _cycles(_import_graph()) if not _within_all(c, "ferry.client")]
    assert not cycles, cycles


def _within_all(modules: set[str], prefix: str) -> bool:
    return all(_within(m, (prefix,)) for m in modules)


def _loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_wire_layer_loads_alone() -> None:
    """``import ferry.xdr`` loads the vocabulary and the codec, no client, server or event
    loop (it loaded 41 Ferry modules, asyncio and threading before issue 19)."""
    loaded = _loaded_by("import ferry.xdr")
    assert {m for m in loaded if m.startswith("ferry")} <= {
        "ferry",
        "ferry.errors",
        "ferry.vocab",
        "ferry.xdr",
    }
    assert not loaded & {"asyncio", "threading", "socket"}


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import ferry", "ferry.client"),
        ("import ferry.client", "ferry.backends"),
        ("import ferry.backends", "ferry.backends.local"),
        ("import ferry.nfs3.service", "ferry.backends.local"),
        ("import ferry.nfsfs", "fsspec"),
        ("import ferry.fuse", "pyfuse3"),
        ("import ferry.cli", "ferry.server"),
    ],
)
def test_packages_load_lazily(statement: str, absent: str) -> None:
    assert absent not in _loaded_by(statement)


def test_import_ferry_leaves_urllib_alone() -> None:
    """Importing Ferry changes no global state: the nfs:// handler for urllib is installed by
    ``ferry.install_urlopen()``, which a program calls."""
    code = (
        "import urllib.request, ferry; ferry.Client; import ferry.nfsfs.filesystem; "
        "assert urllib.request._opener is None, urllib.request._opener"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _dicts_pairing_file_types_and_mode_bits(tree: ast.AST) -> list[int]:
    """Lines of dict literals pairing ``Ftype3.X`` with ``stat.S_IF*`` (either way round)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            items = [ast.unparse(n) for n in (*node.keys, *node.values) if n is not None]
            if any(i.startswith("Ftype3.") for i in items) and any(
                i.startswith("stat.S_IF") for i in items
            ):
                lines.append(node.lineno)
    return lines


def test_one_table_of_file_types_and_mode_bits() -> None:
    """``ferry.vocab.S_IFMT_OF`` (and its inverse) is the one table; there were seven."""
    found = {
        f"{path.relative_to(SRC)}:{line}"
        for path in (SRC / "ferry").rglob("*.py")
        for line in _dicts_pairing_file_types_and_mode_bits(ast.parse(path.read_text()))
    }
    assert {f.partition(":")[0] for f in found} == {"ferry/vocab.py"}, sorted(found)


def test_max_io_is_defined_once() -> None:
    """``MAX_IO`` (1 MiB, the transfer size the server offers and the client sends) has one
    definition, in ``ferry.nfs3.const``; the 4 MiB decode bound has a name of its own."""
    defined = [
        f"{path.relative_to(SRC)}"
        for path in (SRC / "ferry").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and "MAX_IO" in [t.id for t in ast.walk(node) if isinstance(t, ast.Name)][:1]
    ]
    assert defined == ["ferry/nfs3/const.py"]
    from ferry.nfs3 import const, types

    assert const.MAX_IO == 1 << 20 and types.MAX_WIRE_DATA == 4 << 20


def test_the_server_gives_the_core_its_locks(tmp_path: Path) -> None:
    """The sans-IO core holds no lock of its own (single-threaded by default); the server
    layer hands the state it shares between calls a thread lock, as the core held before."""
    import threading

    from ferry.server.app import build_app
    from ferry.server.config import ExportConfig, ServerConfig

    (tmp_path / "export").mkdir()
    export = ExportConfig(path=str(tmp_path / "export"))
    config = ServerConfig(exports=[export], state_dir=tmp_path / "state")
    app = build_app(config)
    try:
        lock_type = type(threading.Lock())
        held = [app.nfs.listings._lock, app.mount.table._lock, app.drc._lock]  # type: ignore
        assert [type(lock) for lock in held] == [lock_type] * 3
        assert len(app.nfs.write_verifier) == 8
    finally:
        app.close()
