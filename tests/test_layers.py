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
* The client never imports the backends or the server.

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
    "ferry.backends": (*VOCAB, "ferry.errors", "ferry.segment", "ferry.workpool", "ferry.backends"),
}
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # module prefix -> the Ferry modules (prefixes) it must not import
    "ferry.client": ("ferry.backends", "ferry.server"),
}
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
                if forbidden is not None and _within(imported, forbidden):
                    found.append(where)
            elif _within(module, SANS_IO) and _within(imported, NO_IO):
                found.append(where + " (sans-IO layer)")
    return found


def test_layers_import_only_downward() -> None:
    violations = _violations()
    assert not violations, "layer contract broken:\n" + "\n".join(violations)


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
    ],
)
def test_packages_load_lazily(statement: str, absent: str) -> None:
    assert absent not in _loaded_by(statement)


def test_import_ferry_leaves_urllib_alone() -> None:
    """Importing Ferry changes no global state: the nfs:// handler for urllib is installed by
    ``ferry.install_urlopen()``, which a program calls."""
    code = (
        "import urllib.request, ferry; ferry.Client; import ferry.filesystem; "
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

    from ferry.config import ExportConfig, ServerConfig
    from ferry.server.app import build_app

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
