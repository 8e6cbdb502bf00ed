"""What a client does when its server stops answering: the one policy behind ``ferry
mount``'s and the client commands' ``--hard``/``--soft``, ``--timeout``, ``--retrans`` and
``--retry-for``, the same keywords of ``connect()`` and of the fsspec file system, and
libnfs's URL options ``timeo``, ``retrans`` and ``autoreconnect``.

* **hard** (the default): a call without a reply is sent again, a lost connection opened
  again, over and over, so a server that restarts costs the caller a wait, not a failed
  copy, as with a hard NFS mount. ``retry_for`` bounds the wait: once the server has been
  silent that long (counted from the moment calls start waiting on it), the waiting calls
  fail (``RpcConnectionError``/``RpcTimeout``, ``TimeoutError`` in the OS faces).
  Default: DEFAULT_RETRY_FOR, five minutes, for the API, fsspec and the CLI: a server
  process restarts in seconds and a machine reboots in one to a few minutes, so both are
  ridden over, while a script aimed at a server that is gone for good still ends.
  ``ferry mount`` defaults to ``inf`` (forever), as the kernel's hard mounts do.
* **soft**: a call fails after ``retrans`` resends (and a lost connection after as many
  reconnect attempts): quick errors, but a restarting server fails whatever was running.
* ``timeout``: seconds before a call is first sent again (doubling per resend, up to a
  minute or more); with hard, ``retrans`` resends are also what it takes to leave a
  server for the next one of a multi-server URL.

A server that refuses the first connection is an error at once (a wrong host or port is
a mistake, not an outage to wait out); once connected, every call follows the policy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .aio import RpcOptions
from .url import NfsUrl

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRANS = 3
DEFAULT_RETRY_FOR = 300.0
SOFT_MAX_TIMEOUT = 60.0
SETTINGS = ("hard", "timeout", "retrans", "retry_for")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Hard or soft, and the numbers that go with it; times in seconds."""

    hard: bool = True
    timeout: float = DEFAULT_TIMEOUT
    retrans: int = DEFAULT_RETRANS
    retry_for: float = DEFAULT_RETRY_FOR  # hard only; math.inf: forever

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")
        if self.retrans < 0:
            raise ValueError(f"retrans must be at least 0, not {self.retrans}")
        if not self.retry_for > 0:
            raise ValueError(f"retry_for must be positive (inf: forever), not {self.retry_for}")

    def rpc_options(self, base: RpcOptions | None = None) -> RpcOptions:
        """The transport options that carry this policy out (``base``'s other fields kept)."""
        base = base or RpcOptions()
        tries = self.retrans + 1
        if self.hard:
            return dataclasses.replace(
                base, timeout=self.timeout, max_timeout=max(self.timeout, base.max_timeout),
                max_tries=tries, reconnect_tries=tries, retry_for=self.retry_for,
            )  # fmt: skip
        return dataclasses.replace(
            base, timeout=self.timeout, max_timeout=max(self.timeout, SOFT_MAX_TIMEOUT),
            max_tries=tries, connect_timeout=self.timeout, reconnect_tries=tries,
            retry_for=None,
        )  # fmt: skip


def url_policy(url: NfsUrl) -> dict[str, Any]:
    """The policy settings a libnfs URL asks for: ``timeo`` (tenths of a second), ``retrans``,
    and ``autoreconnect`` (-1: hard, forever; 0: soft, no retry; N: soft, N retries)."""
    asked: dict[str, Any] = {}
    if url.autoreconnect is not None:
        if url.autoreconnect < 0:
            asked.update(hard=True, retry_for=math.inf)
        else:
            asked.update(hard=False, retrans=url.autoreconnect)
    if url.timeo is not None:
        asked["timeout"] = url.timeo / 10
    if url.retrans is not None:
        asked["retrans"] = url.retrans
    return asked


def resolve(
    options: RpcOptions | None,
    *,
    hard: bool | None = None,
    timeout: float | None = None,
    retrans: int | None = None,
    retry_for: float | None = None,
) -> RpcOptions:
    """The transport options of a client: ``options`` as given when no setting of the
    policy is (all None), else the default policy with the settings given, over
    ``options`` (or the transport's defaults)."""
    given = {"hard": hard, "timeout": timeout, "retrans": retrans, "retry_for": retry_for}
    asked = {k: v for k, v in given.items() if v is not None}
    if options is not None and not asked:
        return options
    return dataclasses.replace(RetryPolicy(), **asked).rpc_options(options)  # type: ignore[arg-type]
