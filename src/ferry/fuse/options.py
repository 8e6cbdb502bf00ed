"""What ``ferry mount`` can be told (``MountOptions``): read by the mount and its handlers,
so it lives apart from both (no import cycle between ``mount.py`` and ``ops.py``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pyfuse3

from ferry.client.nfs import url_keywords
from ferry.client.url import NfsUrl


@dataclasses.dataclass(frozen=True, slots=True)
class MountOptions:
    """What ``ferry mount`` can be told; times in seconds."""

    read_only: bool = False
    uid: int | None = None  # one AUTH_SYS identity for every caller (default: each caller's
    gid: int | None = None  # own, as with the kernel NFS client)
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    hard: bool | None = None  # when the server stops answering (``client.retry``); None:
    timeout: float | None = None  # what the URL says, else the policy's defaults, but for
    retrans: int | None = None  # retry_for: a hard mount waits forever by default, as the
    retry_for: float | None = None  # kernel's do (soft: EIO after retrans resends)
    allow_other: bool = False
    debug: bool = False
    read_ahead_kib: int = 2048  # the kernel's read-ahead for the mount (0: its default)
    direct_io: bool = False  # no page cache: each read/write goes to us (see fuseops.open)

    def retry(self, u: NfsUrl) -> dict[str, Any]:
        """``connect()``'s retry keywords for a mount of ``u``."""
        given = {"hard": self.hard, "timeout": self.timeout, "retrans": self.retrans}
        asked = {k: v for k, v in given.items() if v is not None}
        forever = url_keywords(u).get("retry_for", math.inf)
        return {**asked, "retry_for": self.retry_for or forever}

    def fuse_options(self, fsname: str) -> set[str]:
        opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
        opts |= {"fsname=" + fsname.replace(",", "\\,"), "subtype=ferry"}
        if self.read_only:
            opts.add("ro")
        if self.allow_other:
            opts.add("allow_other")
        if self.debug:
            opts.add("debug")
        return opts
