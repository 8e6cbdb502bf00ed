"""The blocking Client is a thin shell generated from the engine: the same methods with the
same signatures (path calls on ``Client``, procedure calls on ``Client.nfs``), usable from
threads."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import uvloop
from client_proxy import url_for
from rawclient import RunningServer

import ferry
from ferry.client import AsyncNfsClient, Client, NfsProcedures, SyncProcedures

ROOT = Path(__file__).resolve().parents[2]
OWN_LOOP = {"connect", "close"}  # written by hand in sync.py: they start and stop the loop


def _coroutines(cls: type) -> dict[str, object]:
    """Public coroutine and async generator methods of ``cls``."""
    return {
        n: f
        for n, f in inspect.getmembers(cls, inspect.isfunction)
        if not n.startswith("_")
        and (inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f))
    }


def _blocking_return(f: object) -> str:
    """What the blocking twin of async ``f`` returns: the same, or an Iterator over an
    async generator's items."""
    ret = inspect.signature(f).return_annotation  # type: ignore[arg-type]
    if inspect.isasyncgenfunction(f):
        item = ret[ret.index("[") + 1 :].split(",")[0].rstrip("]")
        return f"Iterator[{item}]"
    return str(ret)


@pytest.mark.parametrize(
    ("engine", "shell"), [(AsyncNfsClient, Client), (NfsProcedures, SyncProcedures)]
)
def test_same_signatures_as_the_engine(engine: type, shell: type) -> None:
    """Every public coroutine of the engine has a blocking twin with the same parameters
    (names, kinds, defaults, annotations) and return type; and the shell has no public
    method the engine lacks but those it owns (open, close)."""
    coros = _coroutines(engine)
    assert set(coros) - OWN_LOOP, "no coroutine methods found"
    for name, f in coros.items():
        if name in OWN_LOOP:
            continue
        twin = getattr(shell, name, None)
        assert twin is not None, f"{shell.__name__}.{name} is missing"
        assert not inspect.iscoroutinefunction(twin), f"{shell.__name__}.{name} is async"
        want, got = inspect.signature(f), inspect.signature(twin)
        assert list(got.parameters.values()) == list(want.parameters.values()), name
        assert got.return_annotation == _blocking_return(f), name
    extra = {
        n
        for n, f in inspect.getmembers(shell, inspect.isfunction)
        if not n.startswith("_") and n not in coros
    }
    assert extra <= {"open", "close"}, extra


def test_client_takes_connects_keywords() -> None:
    """The three ways to mount take the same arguments: NfsProcedures.connect,
    AsyncNfsClient.connect (which passes them on) and Client(), all typed by the one
    ConnectOptions list."""
    want = list(inspect.signature(NfsProcedures.connect).parameters.values())
    assert list(inspect.signature(AsyncNfsClient.connect).parameters.values()) == want
    assert list(inspect.signature(Client.__init__).parameters.values())[1:] == want  # self
    assert str(want[-1]) == "**kw: 'Unpack[ConnectOptions]'"


@pytest.mark.parametrize("face", ["sync", "async"])
def test_unknown_connect_keyword_is_a_type_error(face: str) -> None:
    """A misspelled keyword (``readonly`` for ``read_only``) is refused before any
    connection is tried, as an explicit signature would: never silently ignored."""
    kw = {"readonly": True}
    with pytest.raises(TypeError, match="unexpected keyword argument 'readonly'"):
        if face == "sync":
            ferry.connect("nfs://127.0.0.1:9/x", **kw)  # type: ignore[call-arg]
        else:
            uvloop.run(AsyncNfsClient.connect("nfs://127.0.0.1:9/x", **kw))  # type: ignore[arg-type]


def test_signature_check_sees_a_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parity test fails on a twin whose default differs (here: mode of mkdir)."""

    def mkdir(self: Client, path: str, mode: int = 0o755) -> None: ...

    monkeypatch.setattr(Client, "mkdir", mkdir)
    with pytest.raises(AssertionError, match="mkdir"):
        test_same_signatures_as_the_engine(AsyncNfsClient, Client)


def test_generated_methods_are_fresh() -> None:
    """client/sync_calls.py is what scripts/gen_sync.py makes of the engine's source."""
    gen = [sys.executable, str(ROOT / "scripts" / "gen_sync.py"), "--check"]
    done = subprocess.run(gen, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_connect_and_threads(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "a").write_bytes(b"abc")
    with ferry.connect(url_for(ferry_srv.port, export_root)) as c:
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: results.append(c.read_file("a"))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [b"abc"] * 8
        c.write_file("b", b"xyz")
        assert [e.name for e in c.scandir()] in (["a", "b"], ["b", "a"])
        assert c.stats.calls > 8
        assert isinstance(c._loop.loop, uvloop.Loop)  # the blocking client's calls run on uvloop
        fh, _ = c.resolve("b")
        assert c.nfs.getattr(fh).size == 3  # the procedure calls, blocking
        assert c.nfs.lookup(c.root, "b").object == fh
    assert (export_root / "b").read_bytes() == b"xyz"
