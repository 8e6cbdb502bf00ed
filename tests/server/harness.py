"""Starting model servers with small limits, shared by the server-model tests.

(No conftest.py here on purpose: protocol tests import their ``conftest`` by name, and a
second module of that name would shadow it.) Limits are about a second so the
denial-of-service tests stay fast; ``stop_checked`` stops a server with SIGTERM and fails
if it did not exit cleanly or wrote a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE.parent / "protocol"):  # modelserver, rawclient
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from modelserver import VARIANTS, ModelServer, start  # noqa: E402

IDLE, RECORD, SEND = 1.0, 1.0, 1.0
CAP = 24  # connections per process (and threads, and child processes)
LIMIT_ARGS = (
    f"--idle-timeout={IDLE}",
    f"--record-timeout={RECORD}",
    f"--send-timeout={SEND}",
    f"--max-connections={CAP}",
)
BIG = 1 << 20  # size of big.bin in the export


def start_model(
    tmp_path: Path, variant: str, name: str = "srv", extra: tuple[str, ...] = ()
) -> ModelServer:
    export = tmp_path / "export"
    if not export.exists():
        export.mkdir()
        (export / "hello.txt").write_bytes(b"hello")
        (export / "big.bin").write_bytes(bytes(range(256)) * (BIG // 256))
    args = (*VARIANTS[variant], *LIMIT_ARGS, *extra)
    server = start(export, tmp_path / "state", args, tmp_path / f"{name}.log")
    server.wait_settled()
    return server


def stop_checked(server: ModelServer) -> None:
    status = server.stop()
    log = server.stderr()
    assert "Traceback" not in log, log[-4000:]
    assert status == 0, f"exit status {status}\n{log[-4000:]}"
