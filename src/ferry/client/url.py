"""libnfs-compatible NFS URLs: ``nfs://host[:port]/export/path?version=3&nfsport=N&...``.

This module owns the URL syntax and the port rules, nothing else:

* ``nfsport``/``mountport`` query keys win; otherwise a port in the authority serves both
  NFS and MOUNT (Ferry runs them on one port); with neither, ports come from portmap (111).
* Ferry's extension: several servers of one store, comma-separated in the authority
  (``nfs://h1:2049,h2:2050,[::1]/export``), to fail over between; each takes its own port
  (the query keys, when given, win for all). A one-host URL is exactly libnfs's.
  ``NfsUrl.with_servers`` adds servers given apart from the URL (``connect(servers=...)``).
* The path is the export followed by a path inside it. Which prefix is the export is
  decided by the client at mount time (longest prefix first, see ``export_candidates``
  and ``client.exports``) unless ``export`` is given explicitly.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterable

_INT_KEYS = ("nfsport", "mountport", "uid", "gid")
_KNOWN_KEYS = {*_INT_KEYS, "version"}


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
        query = [f"version={self.version}"]
        query += [f"{k}={getattr(self, k)}" for k in _INT_KEYS if getattr(self, k) is not None]
        return f"nfs://{netloc}{urllib.parse.quote(self.path)}?{'&'.join(query)}"

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


def _query(query: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if key not in _KNOWN_KEYS:
            raise ValueError(f"nfs url has unknown option {key!r} (known: {sorted(_KNOWN_KEYS)})")
        value = values[-1]
        if key in ("nfsport", "mountport"):
            out[key] = _port(value, key)
        elif not value.isdigit():
            raise ValueError(f"nfs url option {key} is not a number: {value!r}")
        else:
            out[key] = int(value)
    if out.get("version", 3) != 3:
        raise ValueError(f"nfs url asks for NFS version {out['version']}; only 3 is supported")
    return out


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
    if port == 0:
        raise ValueError(f"nfs url port out of range 1-65535: {url!r}")
    return host, port


def export_candidates(path: str) -> list[tuple[str, str]]:
    """(export, path inside it) pairs to try with MNT, longest export first.

    ``/a/b/c`` -> ``[("/a/b/c", ""), ("/a/b", "c"), ("/a", "b/c"), ("/", "a/b/c")]``.
    """
    parts = [p for p in path.split("/") if p]
    return [("/" + "/".join(parts[:n]), "/".join(parts[n:])) for n in range(len(parts), -1, -1)]
