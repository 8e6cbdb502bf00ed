"""Helpers for the CephFS tests: backends on a CephFS path, and Ferry servers exporting one
CephFS directory under one name with a shared handle key (``ferry serve --config``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.backends.base import Backend
from ferry.backends.cephfs import CephFsBackend
from helpers import peers
from helpers.ceph import CephCluster

Export = tuple[str, str, dict[str, object]]
EXPORT_NAME = "/ceph"
"""What clients MOUNT on every Ferry server of a test (the same name everywhere)."""


_closing: list[threading.Thread] = []


def close_in_background(backend: Backend) -> None:
    """Close a backend without waiting: a libcephfs unmount can take a second (it waits
    for the client's next tick to hand back capabilities). ``join_closing`` waits."""
    t = threading.Thread(target=backend.close, daemon=True)
    t.start()
    _closing.append(t)


def join_closing(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _closing:
        _closing.pop().join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def backend_at(cluster: CephCluster, path: str, **options: object) -> Iterator[CephFsBackend]:
    """A CephFS backend (its own libcephfs client) on ``path``, closed afterwards."""
    b = CephFsBackend(path, conf=str(cluster.conf), **options)  # type: ignore[arg-type]
    try:
        yield b
    finally:
        b.close()


class ConfiguredFerry(peers.FerryServer):
    """``ferry serve --config FILE``: the export is named by the config, not a local path."""

    def __init__(self, config: Path, base: Path, name: str) -> None:
        super().__init__(
            export=base / "unused", state_dir=base / f"state-{name}",
            log_dir=base / f"logs-{name}",
        )  # fmt: skip
        self.config = config

    def argv(self) -> list[str]:
        return [
            self.python, "-m", "ferry", "serve", "--config", str(self.config),
            "--port", str(self.port), "--bind", self.host, "--state-dir", str(self.state_dir),
        ]  # fmt: skip

    def file_url(self, rel: str) -> str:
        return peers.libnfs_url(self.host, EXPORT_NAME, rel, self.port, self.port)

    @property
    def nfs_url(self) -> str:
        """The export as a Ferry client URL."""
        return f"nfs://{self.host}:{self.port}{EXPORT_NAME}"


def cephfs_export(cluster: CephCluster, cephfs_path: str) -> Export:
    """The export table of ``cephfs_path``: (path, backend, options)."""
    return cephfs_path, "cephfs", {"conf": str(cluster.conf), "op_timeout": 20}


def s3_export(rgw: dict[str, str], bucket: str, **options: object) -> Export:
    """The export table of an RGW bucket (``rgw``: the ``rgw`` fixture's S3 options)."""
    return bucket, "s3", {**rgw, "op_timeout": 20, **options}


def s3_admin(rgw: dict[str, str]) -> Any:
    """An s3fs file system with the ``rgw`` fixture's keys, for test set-up."""
    try:
        import s3fs
    except ImportError:
        pytest.fail("s3fs is missing: `make test` installs it (pip install -e '.[test,s3]')")
    return s3fs.S3FileSystem(
        key=rgw["key"], secret=rgw["secret"], client_kwargs={"endpoint_url": rgw["endpoint_url"]},
        skip_instance_cache=True, use_listings_cache=False,
    )  # fmt: skip


def grant_prefix(rgw: dict[str, str], bucket: str, prefix: str, user: str = "scoped") -> None:
    """A bucket policy giving RGW ``user`` objects under ``prefix/`` and listings of that
    prefix only (no ListBucket on the bucket's root): a credential scoped to a prefix."""
    who = {"AWS": [f"arn:aws:iam:::user/{user}"]}
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": who, "Action": ["s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{bucket}"],
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}}},
            {"Effect": "Allow", "Principal": who,
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                        "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
             "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/*"]},
        ],
    }  # fmt: skip
    s3_admin(rgw).call_s3("put_bucket_policy", Bucket=bucket, Policy=json.dumps(policy))


def write_config(path: Path, export: Export, key: bytes | None, **server: object) -> Path:
    """A config exporting ``export`` as EXPORT_NAME with the shared handle ``key`` (None:
    the ``[server]`` keys from ``server`` say where keys come from, ``handle_key_file``)."""
    where, backend, options = export
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    more = "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
    key_line = f'handle_key = "{key.hex()}"\n' if key is not None else ""
    path.write_text(
        f"[server]\n{key_line}{more}\n"
        f'[[export]]\npath = "{where}"\nname = "{EXPORT_NAME}"\nbackend = "{backend}"\n'
        f"root_squash = false\n\n[export.options]\n{table}\n"
    )
    return path


@contextlib.contextmanager
def ferry_servers(
    export: Export, base: Path, count: int, **server: object
) -> Iterator[list[ConfiguredFerry]]:
    """``count`` Ferry servers on their own ports, one config (``[server]`` keys from
    ``server``), one handle key (a new one, unless ``server`` names a ``handle_key_file``).
    Fails the test if a server wrote a traceback or needed SIGKILL to stop.
    """
    base.mkdir(parents=True, exist_ok=True)
    key = None if "handle_key_file" in server else os.urandom(32)
    config = write_config(base / "shared.toml", export, key, **server)
    servers = [ConfiguredFerry(config, base, chr(ord("a") + i)) for i in range(count)]
    try:
        try:
            for s in servers:
                s.start()
        except peers.PeerError as exc:
            pytest.fail(f"could not start ferry: {exc}", pytrace=False)
        yield servers
    finally:
        stoppers = [threading.Thread(target=s.stop) for s in servers]  # each unmounts: ~1 s
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        problems = []
        for s in servers:
            problems += s.problems
            if s.tracebacks():
                problems.append(f"ferry wrote a traceback:\n{s.tracebacks()[-6000:]}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
