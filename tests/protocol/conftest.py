"""Fixtures for NFSv3 protocol tests: the real servers on loopback, per backend.

``server`` serves one export (local tmp dir or memory backend, root squash off) from the
asyncio server in a thread of the test process, and ``nfs`` is an ``Nfs3`` client mounted
on it, acting as root. ``start_server`` starts more servers (read-only, restarted on the
same state dir, ...) and ``connect`` opens more clients; everything is closed at teardown
so no socket leaks a ResourceWarning.

A module that sets ``EVERY_MODEL = True`` (the functional suite, test_nfs3.py) runs each
test that asks for ``nfs`` alone over every (model, backend) pair the server claims
(``servers.SERVED``): the other models as ``ferry serve`` subprocesses, one per pair for
the module, each test in a fresh directory. Tests that need the server in the process
(they ask for ``server``, ``servers`` or ``connect``, or are marked ``in_process``) run
on the in-thread server only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from nfs3wire import Nfs3
from rawclient import RawClient, RunningServer
from servers import BACKENDS, IN_THREAD, SERVED, ModelServers, Servers

_IN_PROCESS_FIXTURES = {"server", "servers", "connect"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``backend`` (unless the test does), and with ``EVERY_MODEL`` the
    (model, backend) pairs too."""
    if "backend" not in metafunc.fixturenames:
        return
    if any("backend" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
        return
    asked = set(inspect.signature(metafunc.function).parameters)
    every = (
        getattr(metafunc.module, "EVERY_MODEL", False)
        and not asked & _IN_PROCESS_FIXTURES
        and metafunc.definition.get_closest_marker("in_process") is None
    )
    if every:
        ids = [b if m == IN_THREAD else f"{b}-{m}" for m, b in SERVED]
        metafunc.parametrize(("model", "backend"), SERVED, ids=ids, scope="module")
    else:
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def model() -> str:
    """The server model (parametrized by ``EVERY_MODEL`` modules; else in-thread)."""
    return IN_THREAD


@pytest.fixture
def servers(backend: str, tmp_path: Path) -> Iterator[Servers]:
    s = Servers(backend, tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server(servers: Servers) -> RunningServer:
    return servers.start()


@pytest.fixture(scope="module")
def model_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServers]:
    s = ModelServers(tmp_path_factory.mktemp)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def nfs(request: pytest.FixtureRequest, model: str, backend: str) -> Iterator[Nfs3]:
    """A client acting as root; ``nfs.root`` is the export's root handle (in-thread
    server) or a fresh directory of the model server's export."""
    if model == IN_THREAD:
        servers: Servers = request.getfixturevalue("servers")
        yield servers.connect(request.getfixturevalue("server"))
        return
    model_servers: ModelServers = request.getfixturevalue("model_servers")
    with ExitStack() as stack:
        yield model_servers.connect(model, backend, request.node.name, stack)


@pytest.fixture
def connect(servers: Servers) -> Callable[[RunningServer], Nfs3]:
    return servers.connect


@pytest.fixture
def client(server: RunningServer) -> Iterator[RawClient]:
    """A raw RPC client of whichever ``server`` the test module defines."""
    c = server.client()
    try:
        yield c
    finally:
        c.close()
