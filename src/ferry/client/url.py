"""libnfs-compatible NFS URLs: ``nfs://host[:port]/export/path?version=3&nfsport=N&...``.

This module owns the URL syntax and the port rules, nothing else:

* ``nfsport``/``mountport`` query keys win; otherwise a port in the authority serves both
  NFS and MOUNT (Ferry runs them on one port); with neither, ports come from portmap (111).
* Ferry's extension: several servers of one store, comma-separated in the authority
  (``nfs://h1:2049,h2:2050,[::1]/export``), to fail over between; each takes its own port
  (the query keys, when given, win for all). A one-host URL is exactly libnfs's.
  ``NfsUrl.with_servers`` adds servers given apart from the URL (``connect(servers=...)``).
* The query takes every argument libnfs takes (``LIBNFS_OPTIONS``: libnfs 4.0 to 6.x,
  ``nfs_set_context_args`` in lib/libnfs.c); docs/urls.md says what each does in Ferry.
  Those with a meaning here are kept in the ``NfsUrl`` (ports, identity, retry policy,
  transfer and read-ahead sizes, caching, read-only, mount traversal); those without
  one are accepted and ignored (``IGNORED``); TLS and Kerberos, which Ferry cannot give,
  are refused rather than silently dropped; a key libnfs does not know is an error.
* The path is the export followed by a path inside it. Which prefix is the export is
  decided by the client at mount time (longest prefix first, see ``export_candidates``
  and ``client.exports``) unless ``export`` is given explicitly.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

_PORT_KEYS = ("nfsport", "mountport")
_INT_KEYS = {  # key: lowest value accepted
    "uid": 0, "gid": 0, "version": 0, "timeo": 1, "retrans": 0, "autoreconnect": -1,
    "readahead": 0, "rsize": 1, "wsize": 1,
}  # fmt: skip
_BOOL_KEYS = ("dircache", "auto-traverse-mounts", "readonly")  # 0/1; readonly also bare
IGNORED = ("debug", "if", "pagecache", "readdir-buffer", "tcp-syncnt")
"""libnfs arguments with no meaning for Ferry (see docs/urls.md): accepted, ignored."""
_REFUSED = {  # libnfs arguments whose values Ferry cannot honour, but for these
    "xprtsec": ("none",),  # TLS: Ferry's RPC is plain TCP
    "sec": (),  # Kerberos (krb5, krb5i, krb5p): Ferry speaks AUTH_SYS only
}
LIBNFS_OPTIONS = (*_PORT_KEYS, *_INT_KEYS, *_BOOL_KEYS, *IGNORED, *_REFUSED)
"""Every URL argument libnfs 4.0 to 6.x accepts, hence every one Ferry accepts."""
_FIELD = {"auto-traverse-mounts": "auto_traverse_mounts"}  # URL key -> NfsUrl field


@dataclasses.dataclass(frozen=True, slots=True)
class NfsUrl:
    """A parsed ``nfs://`` URL; ``path`` is absolute and normalised (no ``.``, ``//``)."""

    host: str
    path: str = "/"
    port: int | None = None
    nfsport: int | None = None
    mountport: int | None = None
    uid: int | None = None
    gid: int | None = None
    version: int = 3
    more: tuple[tuple[str, int | None], ...] = ()  # further servers, (host, port), in order
    # libnfs's further arguments that mean something here (None: not given)
    timeo: int | None = None  # tenths of a second before a call is resent (client.retry)
    retrans: int | None = None  # resends before a soft client fails
    autoreconnect: int | None = None  # -1: hard, forever; 0: soft; N: soft, N retries
    readahead: int | None = None  # bytes an open file reads ahead (0: none)
    rsize: int | None = None  # largest READ, bytes (the server's rtmax may cut it)
    wsize: int | None = None  # largest WRITE, bytes
    dircache: bool | None = None  # False: no attribute and lookup cache
    readonly: bool = False  # refuse every change on the client side (EROFS)
    auto_traverse_mounts: bool = True  # fsspec/CLI: a path goes to the deepest export

    @property
    def servers(self) -> tuple[tuple[str, int | None], ...]:
        """Every server of the URL, (host, port in the authority), the first one first."""
        return ((self.host, self.port), *self.more)

    def nfs_port_of(self, port: int | None) -> int | None:
        """The NFS port of a server whose authority says ``port`` (``None``: ask portmap)."""
        return self.nfsport if self.nfsport is not None else port

    def mount_port_of(self, port: int | None) -> int | None:
        """The MOUNT port of a server whose authority says ``port`` (``None``: portmap)."""
        return self.mountport if self.mountport is not None else port

    @property
    def nfs_port(self) -> int | None:
        """The NFS port if the URL decides it (``None``: ask portmap)."""
        return self.nfs_port_of(self.port)

    @property
    def mount_port(self) -> int | None:
        """The MOUNT port if the URL decides it (``None``: ask portmap)."""
        return self.mount_port_of(self.port)

    def with_servers(self, servers: str | Iterable[str]) -> NfsUrl:
        """This URL with further servers to fail over to, after its own: ``host[:port]``
        items as in the authority (a string may hold several, comma-separated); servers
        it names already are not repeated."""
        items = servers.split(",") if isinstance(servers, str) else list(servers)
        extra = [_server(item.strip(), item) for item in items if item.strip()]
        more = [s for s in dict.fromkeys([*self.more, *extra]) if s != (self.host, self.port)]
        return dataclasses.replace(self, more=tuple(more))

    def format(self) -> str:
        netloc = ",".join(server_name(h, p) for h, p in self.servers)
        query = [f"{k}={v}" for k, v in self.options().items()]
        return f"nfs://{netloc}{urllib.parse.quote(self.path)}?{'&'.join(query)}"

    def options(self) -> dict[str, int]:
        """The URL arguments this URL carries (``version`` always, the others if set)."""
        out = {"version": self.version}
        for key in (*_PORT_KEYS, *_INT_KEYS, *_BOOL_KEYS):
            value = getattr(self, _FIELD.get(key, key))
            if value is not None and key != "version":
                out[key] = int(value)
        if not self.readonly:
            del out["readonly"]
        if self.auto_traverse_mounts:
            del out["auto-traverse-mounts"]
        return out

    __str__ = format


def server_name(host: str, port: int | None) -> str:
    """``host[:port]`` as the authority spells it (an IPv6 address in brackets)."""
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def normalise_path(path: str) -> str:
    """``/a//b/./c/`` -> ``/a/b/c``; ``..`` is refused (an NFS URL names one place)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"nfs url path may not contain '..': {path!r}")
    return "/" + "/".join(parts)


def _port(value: str, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"nfs url {what} is not a number: {value!r}") from None
    if not 0 < n < 65536:
        raise ValueError(f"nfs url {what} out of range 1-65535: {n}")
    return n


def _query(query: str) -> dict[str, Any]:
    """The ``NfsUrl`` fields a query sets; a ValueError names a key libnfs does not know or
    a value that is not what the key takes."""
    out: dict[str, Any] = {}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        value = values[-1]
        if key in _PORT_KEYS:
            out[key] = _port(value, key)
        elif key in _INT_KEYS:
            out[key] = _number(key, value, _INT_KEYS[key])
        elif key in _BOOL_KEYS:
            flag = key == "readonly" and value == ""
            out[_FIELD.get(key, key)] = flag or bool(_number(key, value, 0, 1))
        elif key in _REFUSED:
            _refuse(key, value)
        elif key not in IGNORED:
            known = ", ".join(sorted(LIBNFS_OPTIONS))
            raise ValueError(f"nfs url has unknown option {key!r} (libnfs's options: {known})")
    if out.get("version", 3) != 3:
        raise ValueError(f"nfs url asks for NFS version {out['version']}; only 3 is supported")
    return out


def _number(key: str, value: str, low: int, high: int | None = None) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"nfs url option {key} is not a number: {value!r}") from None
    if n < low or (high is not None and n > high):
        span = f"{low} or {high}" if high == low + 1 else f"at least {low}"
        raise ValueError(f"nfs url option {key} must be {span}, not {n}")
    return n


def _refuse(key: str, value: str) -> None:
    if value in _REFUSED[key]:
        return
    what = "TLS" if key == "xprtsec" else "Kerberos"
    raise ValueError(
        f"nfs url asks for {key}={value}: Ferry has no {what} "
        f"(RPC over plain TCP with AUTH_SYS); leave the option out"
    )


def is_query(text: str) -> bool:
    """Does ``text`` (what follows a ``?``) read as URL arguments rather than part of a
    name: ``key=value`` pairs, or the bare ``readonly``, joined by ``&``?"""
    return bool(text) and all(_PAIR.match(part) or part == "readonly" for part in text.split("&"))


_PAIR = re.compile(r"^[A-Za-z_-]+=[^/]*$")


def parse_url(url: str) -> NfsUrl:
    """Parse an ``nfs://`` URL; raises ValueError naming what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "nfs":
        raise ValueError(f"not an nfs:// url: {url!r}")
    servers = [_server(item, url) for item in parts.netloc.split(",")]
    path = normalise_path(urllib.parse.unquote(parts.path))
    (host, port), more = servers[0], tuple(servers[1:])
    return NfsUrl(host, path, port, more=more, **_query(parts.query))


def _server(netloc: str, url: str) -> tuple[str, int | None]:
    """One ``host[:port]`` of the authority (``[v6]`` in brackets)."""
    parts = urllib.parse.urlsplit(f"//{netloc}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a bad port or bracket
        raise ValueError(f"nfs url has a bad host or port: {url!r} ({exc})") from None
    if not host:
        raise ValueError(f"nfs url has no host: {url!r}")
    if netloc.endswith(":"):  # libnfs too: "Invalid port number"
        raise ValueError(f"nfs url has an empty port (leave out the ':' to ask portmap): {url!r}")
    if port == 0:
        raise ValueError(f"nfs url port out of range 1-65535: {url!r}")
    return host, port


def export_candidates(path: str) -> list[tuple[str, str]]:
    """(export, path inside it) pairs to try with MNT, longest export first.

    ``/a/b/c`` -> ``[("/a/b/c", ""), ("/a/b", "c"), ("/a", "b/c"), ("/", "a/b/c")]``.
    """
    parts = [p for p in path.split("/") if p]
    return [("/" + "/".join(parts[:n]), "/".join(parts[n:])) for n in range(len(parts), -1, -1)]
