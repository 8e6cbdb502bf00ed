"""``urllib.request.urlopen("nfs://host/export/file")``: nfs URLs for urllib and pandas.

pandas hands every URL scheme that urllib knows (``urllib.parse.uses_netloc``, which
lists "nfs") to ``urllib.request.urlopen`` rather than to fsspec, so without this
``pd.read_csv("nfs://...")`` fails with "unknown url type: nfs". ``install()``
(``ferry.install_urlopen()``, called by a program that wants it: importing Ferry changes no
global state) adds ``NfsHandler`` to urllib's global opener, keeping any handlers a
program installed itself. Reads go through Ferry's fsspec filesystem (one cached
connection per server, read-ahead); the response is a read-only file with a
Content-Length header. A request's headers are fsspec storage options (pandas passes its
``storage_options`` as headers): ``pd.read_csv("nfs:///export/t.csv",
storage_options={"host": ..., "port": ...})`` works as with fsspec.

pandas hands URLs to urllib for writing too (``to_csv``; pandas issue 50709): it reads the
file into memory, writes the frame there and drops it, reporting success. The handler
cannot see the data, so it refuses such a request, naming the way that writes.
"""

from __future__ import annotations

import email.message
import sys
import urllib.error
import urllib.request
import urllib.response
from typing import IO, Any

WRITE_HOW = "write through fsspec: with fsspec.open(url, 'w') as f: df.to_csv(f)"


class NfsHandler(urllib.request.BaseHandler):
    """Opens ``nfs://`` URLs (the libnfs syntax of ``ferry.connect``) for reading."""

    def nfs_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        import fsspec  # here: importing fsspec costs ~50 ms, only paid by nfs URL users

        url = req.full_url
        if req.data is not None:
            raise urllib.error.URLError(f"{url}: nfs URLs are read-only through urllib")
        if _pandas_writing():
            raise urllib.error.URLError(
                f"{url}: pandas writes nfs:// URLs through urllib, which only reads them "
                f"(pandas issue 50709: the data would be lost); {WRITE_HOW}"
            )
        options = {key.lower(): value for key, value in req.header_items()}
        try:
            fs, path = fsspec.core.url_to_fs(url, **options)
            size = fs.size(path)
            f: IO[bytes] = fs.open(path, "rb")
        except OSError as exc:
            raise urllib.error.URLError(exc) from exc
        headers = email.message.Message()
        headers["Content-Length"] = str(size)
        return urllib.response.addinfourl(f, headers, url)


def _pandas_writing(depth: int = 40) -> bool:
    """Is pandas opening the URL to write? pandas' ``_get_filepath_or_buffer(path, ...,
    mode, ...)`` is then among our callers (the only place the mode can be seen)."""
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame.f_code.co_name == "_get_filepath_or_buffer" and str(
            frame.f_globals.get("__name__")
        ).startswith("pandas."):
            mode = frame.f_locals.get("mode")
            return isinstance(mode, str) and any(c in mode for c in "wax+")
        if frame.f_back is None:
            return False
        frame = frame.f_back
    return False


def install() -> None:
    """Make urllib's global opener handle ``nfs://`` (idempotent, keeps other handlers)."""
    opener: Any = urllib.request._opener  # type: ignore[attr-defined]
    if opener is None:
        urllib.request.install_opener(urllib.request.build_opener(NfsHandler))
    elif not any(isinstance(h, NfsHandler) for h in opener.handlers):
        opener.add_handler(NfsHandler())
