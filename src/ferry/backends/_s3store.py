"""The S3 calls the S3 backend needs beyond what s3fs offers, and what S3 errors mean to NFS.

s3fs gives listings, HEADs, copies and deletes; a whole-object write needs three things
it does not give:

* ``get`` downloads an object with the ETag of exactly the bytes it wrote (one GET, so
  the two cannot come from different versions).
* ``put`` stores a file only if the object is still the version it was based on
  (``If-Match``), so a COMMIT never uploads a stale copy over what another server stored
  meanwhile; it raises ``Conflict`` instead and the backend merges. Small files go in one
  conditional PUT (atomic where the store checks ``If-Match`` on PUT: AWS S3, Ceph RGW).
  Larger files are uploaded in parts; the ETag is checked again just before the
  completion, which also carries ``If-Match`` (atomic on AWS S3; Ceph RGW 16 ignores it
  there, so a writer that lands between that check and the completion is overwritten).
* ``create`` makes an empty object only if none exists (``If-None-Match: *``).

RGW 16 compares ``If-Match`` with its ETag without the quotes S3 puts around it, so a
quoted ETag never matches there; ``put`` notices (the object still has the ETag it was
refused for) and sends the bare form from then on. On a bucket with versioning, RGW 16
refuses every ``If-Match``: then ``put`` checks the ETag with a HEAD just before an
unconditional PUT (and logs a warning once), which leaves the time of one request for
another server's write to be overwritten.

``head`` falls back to a listing when a HEAD is refused: credentials scoped to a prefix
(ListBucket only under it) get 403, not 404, for a key that does not exist.

``describe`` names an error by its S3 code (``AccessDenied (HTTP 403) on PutObject``, not
s3fs's ``PermissionError: None``); ``status`` maps it to NFS: an unreachable or
overloaded store is NFS3ERR_JUKEBOX (retryable), a refusal NFS3ERR_ACCES.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable
from typing import Any, TypeVar

from ferry.vocab import Nfsstat3

T = TypeVar("T")
log = logging.getLogger("ferry.backends.s3")
_IF_MATCH_FORMS = ("quoted", "bare", "checked")
_PART_CONCURRENCY = 4
_RETRYABLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed",
     "ThrottlingException", "ConditionalRequestConflict"}
)  # fmt: skip
_STATUS_BY_CODE = {
    "NoSuchKey": Nfsstat3.NOENT,
    "NotFound": Nfsstat3.NOENT,
    "AccessDenied": Nfsstat3.ACCES,
    "Forbidden": Nfsstat3.ACCES,
    "QuotaExceeded": Nfsstat3.DQUOT,
    "EntityTooLarge": Nfsstat3.FBIG,
}


class Conflict(Exception):
    """The object is no longer the version a write was based on."""


class Store:
    """One bucket through an s3fs file system (``fs``); keys are ``bucket/key`` paths."""

    def __init__(self, fs: Any, chunk: int) -> None:
        self.fs = fs
        self._chunk = chunk
        self._if_match = "quoted"  # then "bare" (RGW 16), then "checked" (HEAD, then PUT)
        self._if_none_match = True

    def _run(self, coro: Awaitable[T]) -> T:
        from fsspec.asyn import sync

        async def call() -> T:
            return await coro

        return sync(self.fs.loop, call)  # type: ignore[no-any-return]

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        bucket, _, key = path.partition("/")
        return self._run(self.fs._call_s3(method, Bucket=bucket, Key=key, **kwargs))

    # -- reading ------------------------------------------------------------------------

    def get(self, path: str, dest: str) -> str:
        """Write object ``path`` into the file ``dest``; its ETag. FileNotFoundError."""
        bucket, _, key = path.partition("/")

        async def download() -> str:
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            body = resp["Body"]
            try:
                with open(dest, "wb") as f:
                    while chunk := await body.read(1 << 20):
                        f.write(chunk)
            finally:
                body.close()
            return str(resp["ETag"])

        return self._run(download())

    def head(self, path: str) -> dict[str, Any]:
        """s3fs's ``info`` of ``path``; a listing decides where a HEAD is refused."""
        try:
            return dict(self.fs.info(path))
        except PermissionError as refused:
            bucket, _, key = path.partition("/")
            try:
                return self._listed(bucket, key)
            except PermissionError:
                raise refused from None

    def _listed(self, bucket: str, key: str) -> dict[str, Any]:
        def first(prefix: str) -> dict[str, Any] | None:
            out = self._run(self.fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix,
                                             MaxKeys=1))  # fmt: skip
            found = out.get("Contents") or []
            return found[0] if found else None

        entry = first(key)
        if entry is not None and entry["Key"] == key:
            return {"name": f"{bucket}/{key}", "type": "file", "size": entry["Size"],
                    "ETag": entry["ETag"], "LastModified": entry["LastModified"]}  # fmt: skip
        if first(key + "/") is not None:
            return {"name": f"{bucket}/{key}", "type": "directory", "size": 0}
        raise FileNotFoundError(f"{bucket}/{key}")

    def check(self, path: str) -> None:
        """Raise what listing the export's prefix raises (a missing bucket, a refusal)."""
        bucket, _, prefix = path.partition("/")
        self._run(self.fs._call_s3("list_objects_v2", Bucket=bucket, Delimiter="/", MaxKeys=1,
                                   Prefix=prefix + "/" if prefix else ""))  # fmt: skip

    # -- writing ------------------------------------------------------------------------

    def create(self, path: str) -> bool:
        """Make ``path`` an empty object unless one exists; whether it made it."""
        condition = {"IfNoneMatch": "*"} if self._if_none_match else {}
        try:
            self._call("put_object", path, Body=b"", **condition)
        except Exception as exc:
            if code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if code(exc) != "NotImplemented" or not condition:
                raise
            self._if_none_match = False  # a store without conditional writes
            return self.create(path)
        return True

    def put(self, path: str, source: str, if_match: str) -> str:
        """Store the file ``source`` as ``path`` if its ETag is still ``if_match``; the
        new ETag. Conflict if it changed, FileNotFoundError if it is gone."""
        for _ in _IF_MATCH_FORMS:
            form = self._if_match
            match = if_match.strip('"') if form == "bare" else if_match
            try:
                if form == "checked" and self.head(path).get("ETag") != if_match:
                    raise Conflict(path)
                if os.path.getsize(source) < 2 * self._chunk:
                    return self._put_whole(path, source, None if form == "checked" else match)
                return self._put_parts(path, source, if_match, None if form == "checked" else match)
            except Conflict:
                if form == "checked" or self.head(path).get("ETag") != if_match:
                    raise  # it did change (FileNotFoundError from head: it is gone)
                self._next_form(path, form)  # refused although it matches
            except Exception as exc:
                if code(exc) != "NotImplemented" or form == "checked":
                    raise
                self._next_form(path, "bare")  # a store without conditional writes
        raise Conflict(path)

    def _next_form(self, path: str, form: str) -> None:
        self._if_match = _IF_MATCH_FORMS[_IF_MATCH_FORMS.index(form) + 1]
        if self._if_match == "checked":
            log.warning(
                "s3 %s: the store refuses If-Match even for the object's current ETag (RGW "
                "does on a bucket with versioning) or does not know it; commits now check "
                "the ETag just before an unconditional PUT, so a write another server makes "
                "in between is lost",
                path.partition("/")[0],
            )

    def _put_whole(self, path: str, source: str, match: str | None) -> str:
        with open(source, "rb") as f:
            data = f.read()
        condition = {"IfMatch": match} if match else {}
        try:
            return str(self._call("put_object", path, Body=data, **condition)["ETag"])
        except Exception as exc:
            _raise_conflict(exc)
            raise

    def _put_parts(self, path: str, source: str, if_match: str, match: str | None) -> str:
        bucket, _, key = path.partition("/")
        s3 = self.fs._call_s3
        condition = {"IfMatch": match} if match else {}

        async def upload() -> str:
            mpu = await s3("create_multipart_upload", Bucket=bucket, Key=key)
            uid = mpu["UploadId"]
            try:
                etags = await self._parts(bucket, key, uid, source)
                head = await s3("head_object", Bucket=bucket, Key=key)
                if head["ETag"] != if_match:
                    raise Conflict(path)
                parts = [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]
                done = await s3("complete_multipart_upload", Bucket=bucket, Key=key,
                                UploadId=uid, MultipartUpload={"Parts": parts},
                                **condition)  # fmt: skip
            except BaseException as exc:
                with contextlib.suppress(Exception):  # the store may be what failed
                    await s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=uid)
                _raise_conflict(exc)
                raise
            return str(done.get("ETag") or _multipart_etag(etags))

        return self._run(upload())

    async def _parts(self, bucket: str, key: str, uid: str, source: str) -> list[str]:
        """Upload ``source`` in ``chunk``-byte parts, a few at a time; their ETags."""
        size, etags = os.path.getsize(source), []
        with open(source, "rb") as f:
            for start in range(0, size, self._chunk * _PART_CONCURRENCY):
                batch = []
                for i in range(start, min(size, start + self._chunk * _PART_CONCURRENCY),
                               self._chunk):  # fmt: skip
                    batch.append(
                        self.fs._call_s3("upload_part", Bucket=bucket, Key=key, UploadId=uid,
                                         PartNumber=i // self._chunk + 1,
                                         Body=os.pread(f.fileno(), self._chunk, i))
                    )  # fmt: skip
                etags += [str(r["ETag"]) for r in await asyncio.gather(*batch)]
        return etags


def _multipart_etag(etags: list[str]) -> str:
    """The ETag S3 gives an object uploaded in these parts (for stores that answer none)."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags))
    return f'"{digest.hexdigest()}-{len(etags)}"'


def _raise_conflict(exc: BaseException) -> None:
    if code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
        raise Conflict(str(exc)) from exc
    if code(exc) in ("NoSuchKey", "404"):
        raise FileNotFoundError(str(exc)) from exc


# -- errors ----------------------------------------------------------------------------


def _client_error(exc: BaseException) -> Any:
    """The botocore ClientError behind ``exc`` (s3fs wraps them in OSError), or None."""
    seen = 0
    err: BaseException | None = exc
    while err is not None and seen < 10:
        if hasattr(err, "response") and isinstance(getattr(err, "response", None), dict):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def code(exc: BaseException) -> str | None:
    """The S3 error code behind ``exc`` (``AccessDenied``, ``PreconditionFailed``...)."""
    err = _client_error(exc)
    if err is None:
        return None
    return str(err.response.get("Error", {}).get("Code") or "") or None


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached or did not answer in time."""
    try:
        from aiohttp import ClientConnectionError
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover - s3fs brings both
        return isinstance(exc, ConnectionError | TimeoutError)
    kinds = (ConnectionError, TimeoutError, asyncio.TimeoutError, ClientConnectionError,
             BotoConnectionError, HTTPClientError)  # fmt: skip
    err: BaseException | None = exc
    for _ in range(10):
        if err is None:
            return False
        if isinstance(err, kinds) or "Timeout" in type(err).__name__:
            return True
        err = err.__cause__ or err.__context__
    return False


def from_store(exc: BaseException) -> bool:
    """Whether ``exc`` came from the store (an S3 error, or no connection to it)."""
    return _client_error(exc) is not None or unreachable(exc)


def describe(exc: BaseException) -> str:
    """``exc`` for a log or an error message, with the S3 error code if there is one."""
    err = _client_error(exc)
    if err is None:
        return f"{type(exc).__name__}: {exc}"
    error = err.response.get("Error", {})
    http = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    text = f"{error.get('Code') or 'error'} (HTTP {http})"
    if getattr(err, "operation_name", None):
        text += f" on {err.operation_name}"
    message = error.get("Message")
    return f"{text}: {message}" if message and message not in ("None", error.get("Code")) else text


def status(exc: BaseException) -> Nfsstat3:
    """The NFS status of a failed store call."""
    err = _client_error(exc)
    if err is None:
        if unreachable(exc):
            return Nfsstat3.JUKEBOX
    else:
        name = code(exc) or ""
        http = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if name in _RETRYABLE_CODES or http >= 500:
            return Nfsstat3.JUKEBOX
        if name in _STATUS_BY_CODE:
            return _STATUS_BY_CODE[name]
    if isinstance(exc, FileNotFoundError):
        return Nfsstat3.NOENT
    if isinstance(exc, PermissionError):
        return Nfsstat3.ACCES
    return Nfsstat3.IO
