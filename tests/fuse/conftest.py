"""A server (Ferry, or NFS-Ganesha as the reference) and a ``ferry mount`` of it on loopback.

One server and one mount per module and server kind (start-up costs ~1 s each); tests work
in their own sub-directories. Teardown unmounts with SIGTERM and fails if anything stays
mounted, if the mount process failed, or if Ferry wrote a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fusetest import SERVERS, check_stopped, mount_or_fail, serving
from mounthelp import Mount


@pytest.fixture(scope="module", params=SERVERS)
def nfs_mount(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    """``ferry mount`` of a Ferry server, then of NFS-Ganesha (the test runs once each)."""
    base = tmp_path_factory.mktemp(f"fuse-{request.param}")
    with serving(request.param, base) as server:
        m = mount_or_fail(server, base / "mnt")
        try:
            yield m
        finally:
            check_stopped(m, m.stop())
