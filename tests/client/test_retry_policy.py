"""The retry policy (``ferry.client.retry``) and its faces: ``connect()`` keywords, fsspec
storage options, libnfs URL arguments and the CLI options, each shown to change what the
client does when its server goes away (killed, or frozen with SIGSTOP) while a call waits.
The default, riding over a restart, is in test_server_restart.py."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ferry
import fsspec
from ferry.client import RpcOptions
from ferry.client.retry import DEFAULT_RETRY_FOR, RetryPolicy, resolve, url_policy
from ferry.client.url import parse_url
from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import peers
from helpers.ferry_fixture import running_ferry
from helpers.outage import frozen, kill

SRC = str(Path(__file__).resolve().parents[2] / "src")
SLACK = 6.0  # seconds beyond the limit under test that a failure may take (a busy machine)


def test_policy_to_transport_options() -> None:
    hard = RetryPolicy().rpc_options()
    assert (hard.timeout, hard.retry_for, hard.max_tries) == (10.0, DEFAULT_RETRY_FOR, 4)
    soft = RetryPolicy(hard=False, timeout=0.5, retrans=1).rpc_options()
    assert (soft.timeout, soft.retry_for, soft.max_tries, soft.reconnect_tries) == (
        0.5, None, 2, 2,
    )  # fmt: skip
    window = RpcOptions(window=7)
    assert RetryPolicy(retry_for=math.inf).rpc_options(window).window == 7
    assert resolve(window) is window  # nothing asked: the transport as given
    assert resolve(window, hard=False).retry_for is None
    assert resolve(None).retry_for == DEFAULT_RETRY_FOR  # the default is hard, bounded
    with pytest.raises(ValueError):
        RetryPolicy(retry_for=0)


@pytest.mark.parametrize(
    ("query", "asked"),
    [
        ("timeo=25", {"timeout": 2.5}),
        ("retrans=1", {"retrans": 1}),
        ("autoreconnect=-1", {"hard": True, "retry_for": math.inf}),
        ("autoreconnect=0", {"hard": False, "retrans": 0}),
        ("autoreconnect=3&timeo=10", {"hard": False, "retrans": 3, "timeout": 1.0}),
    ],
)
def test_libnfs_url_arguments_set_the_policy(query: str, asked: dict[str, object]) -> None:
    assert url_policy(parse_url(f"nfs://h:1/e?{query}")) == asked


@pytest.fixture
def server(tmp_path: Path) -> Iterator[peers.FerryServer]:
    with running_ferry(tmp_path) as srv:
        (srv.export / "f").write_bytes(b"data")
        yield srv


def _fails_within(limit: float, call: object, *args: object) -> str:
    start = time.monotonic()
    with pytest.raises((TimeoutError, ConnectionError)) as info:
        call(*args)  # type: ignore[operator]
    took = time.monotonic() - start
    assert took < limit + SLACK, f"gave up after {took:.1f} s, not about {limit} s"
    return str(info.value)


def test_connect_retry_for_bounds_a_hard_wait(server: peers.FerryServer) -> None:
    with ferry.connect(server.url, retry_for=1.5, attr_cache=0) as c:
        assert c.read_file("f") == b"data"
        kill(server)
        start = time.monotonic()
        said = _fails_within(1.5, c.read_file, "f")
        assert time.monotonic() - start >= 1.5, "gave up before retry_for"
        assert "did not answer for 1.5 s" in said


def test_connect_soft_fails_fast(server: peers.FerryServer) -> None:
    with ferry.connect(server.url, hard=False, timeout=0.2, retrans=1, attr_cache=0) as c:
        assert c.read_file("f") == b"data"
        kill(server)
        _fails_within(0.5, c.read_file, "f")


def test_a_frozen_server_is_given_up_on_after_retry_for(server: peers.FerryServer) -> None:
    """SIGSTOP: the connection stays up, nothing answers; the call's timer (10 s) would
    fire too late, so it is cut to what is left of retry_for."""
    with ferry.connect(server.url, retry_for=1.0, attr_cache=0) as c:
        with frozen(server):
            said = _fails_within(1.0, c.read_file, "f")
        assert "did not answer for 1 s" in said
        assert c.read_file("f") == b"data"  # the server is back: the next call works


def test_fsspec_storage_options_and_url_arguments(server: peers.FerryServer) -> None:
    path = f"{server.export}/f"
    fs = fsspec.filesystem(
        "nfs", host=server.host, port=server.port, retry_for=1.0, attr_cache=0,
        skip_instance_cache=True,
    )  # fmt: skip
    soft = fsspec.filesystem(
        "nfs", **NfsFileSystem._get_kwargs_from_urls(
            f"{server.url}&autoreconnect=0&timeo=2"
        ), attr_cache=0, skip_instance_cache=True,
    )  # fmt: skip
    assert soft.client_options["hard"] is False and soft.client_options["timeout"] == 0.2
    assert fs.cat_file(path) == soft.cat_file(path) == b"data"
    kill(server)
    assert "did not answer for 1 s" in _fails_within(1.0, fs.cat_file, path)
    _fails_within(0.5, soft.cat_file, path)


def _cli(*args: str, limit: float) -> tuple[int, str, float]:
    start = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "ferry", *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": SRC}, timeout=limit + 60,
    )  # fmt: skip
    return res.returncode, res.stderr, time.monotonic() - start


def test_cli_options(server: peers.FerryServer) -> None:
    """``--retry-for`` and ``--soft`` on a frozen server; each gives up in time, with one
    line saying why. A server that is not there at all fails at once, whatever the policy:
    only calls that have begun wait."""
    url = server.file_url("f")
    with frozen(server):
        code, err, took = _cli("cat", "--retry-for", "1", url, limit=1)
        assert code == 1 and took < 1 + SLACK, (err, took)
        lines = err.splitlines()
        assert lines[-1].startswith("ferry: ") and "did not answer for 1 s" in lines[-1], err
        assert "Traceback" not in err
        code, err, took = _cli("cat", "--soft", "--timeout", "0.3", "--retrans", "1", url,
                               limit=1)  # fmt: skip
        assert code == 1 and took < 1 + SLACK and "Traceback" not in err, (err, took)
    kill(server)
    code, err, took = _cli("cat", url, limit=0)
    assert code == 1 and took < SLACK and "Connection refused" in err, (err, took)


def test_cli_rejects_a_bad_policy(server: peers.FerryServer) -> None:
    code, err, _ = _cli("ls", "--retry-for", "0", server.url, limit=0)
    assert code == 2 and "--retry-for" in err
    code, err, _ = _cli("ls", "--hard", "--soft", server.url, limit=0)
    assert code == 2 and "not allowed with" in err


def test_connect_async_takes_the_same_keywords(server: peers.FerryServer) -> None:
    async def body() -> tuple[float, float | None]:
        async with ferry.connect_async(server.url, hard=False, timeout=0.25) as c:
            return c.rpc.options.timeout, c.rpc.options.retry_for

    assert asyncio.run(body()) == (0.25, None)
