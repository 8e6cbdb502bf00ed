"""``ferry.server.serve(config)``, the public way to run a server from Python: the README's
"Embedding the server" example runs as written (with a temporary export), serves a
client, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import ferry

README = Path(__file__).resolve().parents[2] / "README.md"
SRC = Path(__file__).resolve().parents[2] / "src"


def _example() -> str:
    section = README.read_text().split("## Embedding the server\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return block


def _wait_for_port(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    assert proc.stdout is not None
    deadline, out = time.monotonic() + timeout, b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and proc.poll() is None:
            if sel.select(0.2):
                out += os.read(proc.stdout.fileno(), 4096)
            if m := re.search(rb"NFS on port (\d+)\n", out):
                return int(m.group(1))
    raise AssertionError(f"no port announced: {out!r}")


def test_the_readme_embedding_example_serves_and_stops(tmp_path: Path) -> None:
    export = tmp_path / "data"
    export.mkdir()
    (export / "hello.txt").write_bytes(b"hello")
    code = _example().replace('"/srv/data"', repr(str(export)))
    code = code.replace(
        "port=0,", f"port=0, state_dir=__import__('pathlib').Path({str(tmp_path / 'state')!r}),"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        port = _wait_for_port(proc)
        with ferry.connect(f"nfs://127.0.0.1:{port}{export}") as client:
            assert client.read_file("hello.txt") == b"hello"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert "Traceback" not in err, err
