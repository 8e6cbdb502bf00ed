"""Getting a CephFS mount: the export's options, subvolumes, and errors that name their cause.

libcephfs answers most mistakes with one errno: a missing keyring file, a keyring without
the client's key, a file system name that does not exist and a directory that does not
exist are all ``ENOENT``. An operator needs to know which, so a failed mount is looked
into before it is reported: the keyring files the client would read, then a second mount
of the file system's root (ENOENT there: no such file system; else: no such directory).
Every failure is a ``ConfigError`` of one line.

A **subvolume** (``ceph fs subvolume create``) lives in a directory the manager chooses:
``/volumes/<group>/<name>/<uuid>``. Its ``.meta`` file (the volumes module's own record,
``[GLOBAL] path = ...``) says which; ``ceph fs subvolume getpath`` prints the same. Ferry
reads it with libcephfs, so the client's caps must cover ``/volumes/<group>/<name>``
(``ceph fs authorize <fs> client.<id> /volumes/<group>/<name> rw``); a subvolume made
before ``.meta`` existed (Ceph 14) is that directory itself.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import errno
import os
import re
import threading
from collections.abc import Callable
from typing import TypeVar

from ferry.backends import _libcephfs as lc
from ferry.backends._cephfsmount import MountedFs
from ferry.errors import ConfigError

T = TypeVar("T")
DEFAULT_GROUP = "_nogroup"
"""The group of subvolumes created without ``--group_name``."""
QUIET = {"debug_client": ("0/5", "0/0")}
"""Ceph options whose default (first) costs every call, and the value Ferry uses instead
when neither the conf file nor the export's ``settings`` set them. ``debug_client``'s
``0/5`` writes nothing, but gathers every level-5 line in memory (for a crash dump): each
libcephfs call formats its log lines and queues them to the log thread, about 9 µs of CPU
of the 21 µs a cached GETATTR costs the backend (one thread, 20,000 calls)."""


@dataclasses.dataclass(slots=True)
class MountSpec:
    """What to mount: ``path`` inside the file system, or inside ``subvolume`` if given."""

    path: str = "/"
    conf: str | None = None
    client_id: str | None = None
    keyring: str | None = None
    fs_name: str | None = None
    subvolume: str | None = None
    subvolumegroup: str = DEFAULT_GROUP
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    resolved: str | None = None
    """The directory of the file system actually mounted, once known (a subvolume's path
    is looked up once: a mount made again after an eviction goes straight there)."""

    @property
    def client(self) -> str:
        return f"client.{self.client_id or 'admin'}"

    @property
    def where(self) -> str:
        """How error messages name this export."""
        inside = f" in subvolume {self.subvolumegroup}/{self.subvolume}" if self.subvolume else ""
        fs = f", file system {self.fs_name}" if self.fs_name else ""
        return f"cephfs {self.path!r}{inside} (conf {self.conf or 'default'}, {self.client}{fs})"


def connect(spec: MountSpec, open_files: int, open_idle: float) -> MountedFs:
    """A mount of ``spec``; ConfigError (one line, naming the cause) if there is none."""
    return _in_new_thread(lambda: _connect(spec, open_files, open_idle))


def _in_new_thread(make: Callable[[], T]) -> T:
    """``make()`` on a thread of its own. libcephfs draws its network address nonce from
    a per-thread random engine seeded on first use: mounting on the main thread of a
    process that a mounted parent forked (prefork workers) would reuse the parent's
    sequence, so sibling workers got the same address and the MDS mixed them up."""
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(make())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    t = threading.Thread(target=run, name="cephfs-mount")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return box[0]


def _connect(spec: MountSpec, open_files: int, open_idle: float) -> MountedFs:
    if spec.resolved is None:
        if spec.subvolume:
            spec.resolved = _join(_subvolume_path(spec), spec.path)
        else:
            spec.resolved = _join("/", spec.path)
    m = _mounted(spec, spec.resolved)
    try:
        return MountedFs(m, open_files, open_idle)
    except BaseException:
        m.shutdown()
        raise


def _client(spec: MountSpec) -> lc.Mount:
    """A configured, not yet mounted client; ConfigError if the conf cannot be read."""
    try:
        m = lc.Mount(spec.client_id, spec.conf, spec.settings)
    except OSError as exc:
        if exc.errno == errno.ENOENT and spec.conf:
            raise ConfigError(f"{spec.where}: conf file {spec.conf} not found") from exc
        raise ConfigError(f"{spec.where}: {exc} (is libcephfs2 installed?)") from exc
    _quieten(m, spec.settings)
    return m


def _quieten(m: lc.Mount, settings: dict[str, str]) -> None:
    """Turn off the log levels of ``QUIET`` that neither the conf file nor ``settings`` set
    (an option still at Ceph's default)."""
    for option, (default, quiet) in QUIET.items():
        if option not in settings and m.conf_get(option) == default:
            m.conf_set(option, quiet)


def _mounted(spec: MountSpec, root: str) -> lc.Mount:
    """A client mounted at ``root``, or ConfigError saying why not."""
    m = _client(spec)
    try:
        m.mount(root)
    except OSError as exc:
        try:
            why = _diagnose(spec, m, root, exc)
        finally:
            m.shutdown()
        raise ConfigError(f"{spec.where}: cannot mount {root}: {why}") from exc
    return m


def _diagnose(spec: MountSpec, m: lc.Mount, root: str, exc: OSError) -> str:
    """Why mounting ``root`` failed with ``exc``, in words an operator can act on."""
    code = exc.errno
    if code == errno.ETIMEDOUT:
        return "timed out (monitors in the conf unreachable, or no active MDS?)"
    if code == errno.EACCES:
        return (
            f"authentication failed: the key for {spec.client} in its keyring is not the "
            "cluster's (check client_id and keyring)"
        )
    if code == errno.EPERM:
        return (
            f"{spec.client} may not mount it: its mds caps do not cover {root} "
            f"(`ceph auth get {spec.client}`)"
        )
    if code != errno.ENOENT:
        return f"{exc.strerror or exc}"
    if why := _keyring_problem(spec, m):
        return why
    return _what_is_missing(spec, root)


def _keyring_problem(spec: MountSpec, m: lc.Mount) -> str | None:
    """What is wrong with the keyring this client would use, if cephx is on."""
    with contextlib.suppress(OSError):
        if "cephx" not in m.conf_get("auth_client_required"):
            return None
    try:
        paths = [p for p in re.split(r"[,;\s]+", m.conf_get("keyring")) if p]
    except OSError:
        return None
    if spec.keyring and not os.path.exists(spec.keyring):
        return f"keyring file {spec.keyring} not found"
    present = [p for p in paths if os.path.exists(p)]
    if not present:
        return f"no keyring for {spec.client}: none of {', '.join(paths)} exists (set keyring)"
    section = f"[{spec.client}]"
    for p in present:
        try:
            with open(p, errors="replace") as f:
                if any(line.strip() == section for line in f):
                    return None
        except OSError as exc:
            return f"cannot read keyring {p}: {exc.strerror}"
    return f"keyring {present[0]} has no key for {spec.client}"


def _what_is_missing(spec: MountSpec, root: str) -> str:
    """ENOENT with a usable keyring: no such file system, or no such directory in it?
    A mount of the file system's root tells (EPERM there still means it exists)."""
    fs = repr(spec.fs_name) if spec.fs_name else "(the default)"
    probe = _client(spec)
    try:
        probe.mount("/")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            if spec.fs_name:
                return f"no file system named {fs} (`ceph fs ls`)"
            return "the cluster has no CephFS file system (or no default one: set fs_name)"
    finally:
        threading.Thread(target=probe.shutdown, daemon=True).start()  # ~1 s: do not wait
    return f"no directory {root} in file system {fs}"


def _subvolume_path(spec: MountSpec) -> str:
    """The directory of subvolume ``spec.subvolume`` (what ``ceph fs subvolume getpath``
    prints), read from its ``.meta``; ConfigError if that cannot be done."""
    base = f"/volumes/{spec.subvolumegroup}/{spec.subvolume}"
    try:
        m = _mounted(spec, base)
    except ConfigError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EPERM:
            raise ConfigError(
                f"{spec.where}: cannot read the subvolume's record: {spec.client}'s mds caps "
                f"do not cover {base} (`ceph fs authorize <fs> {spec.client} {base} rw`, or "
                "give `ceph fs subvolume getpath`'s answer as the path, without subvolume)"
            ) from exc
        if "no directory" in str(exc):
            raise ConfigError(
                f"{spec.where}: no subvolume {spec.subvolume!r} in group "
                f"{spec.subvolumegroup!r} (`ceph fs subvolume ls <fs>`)"
            ) from exc
        raise
    try:
        meta = _read_file(m, b".meta")
    finally:
        threading.Thread(target=m.shutdown, daemon=True).start()
    if meta is None:
        return base  # a subvolume from before .meta files (Ceph 14): the directory itself
    record = configparser.ConfigParser()
    try:
        record.read_string(meta.decode(errors="replace"))
        path = record["GLOBAL"]["path"]
    except (configparser.Error, KeyError) as exc:
        raise ConfigError(f"{spec.where}: unreadable {base}/.meta: {exc}") from exc
    state = record["GLOBAL"].get("state", "complete")
    if state != "complete":
        raise ConfigError(f"{spec.where}: subvolume not ready (state {state})")
    return path


def _read_file(m: lc.Mount, name: bytes) -> bytes | None:
    """A small file in the mount's root, or None if it does not exist."""
    root = m.lookup_root()
    try:
        stx = lc.Statx()
        try:
            inode = m.lookup(root, name, stx)
        except FileNotFoundError:
            return None
        try:
            fh = m.open(inode, os.O_RDONLY)
            try:
                return bytes(m.read(fh, 0, 1 << 16))
            finally:
                m.close(fh)
        finally:
            m.put(inode)
    finally:
        m.put(root)


def _join(base: str, path: str) -> str:
    """``path`` (absolute or not) inside directory ``base``, normalised; ConfigError for
    a ``..`` (it could lead out of a subvolume)."""
    parts = [p for p in f"{base}/{path}".split("/") if p and p != "."]
    if ".." in parts:
        raise ConfigError(f"cephfs path {path!r}: '..' is not allowed")
    return "/" + "/".join(parts)
