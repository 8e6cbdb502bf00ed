"""The README's Python examples run, against a Ferry server (issue 17: the async example
among them). Each ```python block of "Use it from Python" that uses the example server
(``127.0.0.1:2049``, export ``/home/me/ferry/share``) runs with the test server's port and
export put in; a ``print(...)  # TEXT`` line must print TEXT. The one block that needs two
servers is named below and is the only one not run."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import peers

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = "127.0.0.1:2049/home/me/ferry/share"
NOT_RUN = "nfs://127.0.0.1:12049,127.0.0.1:12050/srv/shared"  # failover: needs two servers


def _python_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Use it from Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _expected(code: str) -> list[str]:
    return re.findall(r"^\s*print\(.*\)\s+# (.+)$", code, re.M)


def test_readme_python_examples_run(ferry_server: peers.FerryServer) -> None:
    port, export = str(ferry_server.port), str(ferry_server.export)
    blocks = _python_blocks()
    run = [b for b in blocks if EXAMPLE in b]
    assert [b for b in blocks if b not in run] == [b for b in blocks if NOT_RUN in b]
    assert len(run) == 4 and any("connect_async" in b for b in run)
    try:
        for n, block in enumerate(run):
            code = (
                block.replace("127.0.0.1:2049", f"127.0.0.1:{port}")
                .replace('"port": 2049', f'"port": {port}')
                .replace("port=2049", f"port={port}")
                .replace("/home/me/ferry/share", export)
            )
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"README.md python block {n + 1}", "exec"), {})  # noqa: S102
            for line in _expected(code):
                assert line.strip() in out.getvalue(), (n + 1, line, out.getvalue())
    finally:
        NfsFileSystem.clear_instance_cache()
    assert (ferry_server.export / "hello.txt").read_bytes() == b"hi\n"
    assert (ferry_server.export / "async.txt").read_bytes() == b"hi from asyncio\n"
    assert (ferry_server.export / "procs" / "raw.bin").read_bytes() == b"raw\n"
    assert (ferry_server.export / "table.csv").read_bytes() == b"a,b\n1,2\n3,4\n"
