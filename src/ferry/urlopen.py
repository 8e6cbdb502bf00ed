"""``urllib.request.urlopen("nfs://host/export/file")``: nfs URLs for urllib and pandas.

pandas hands every URL scheme that urllib knows (``urllib.parse.uses_netloc``, which
lists "nfs") to ``urllib.request.urlopen`` rather than to fsspec, so without this
``pd.read_csv("nfs://...")`` fails with "unknown url type: nfs". ``install()`` (run by
``import ferry``) adds ``NfsHandler`` to urllib's global opener, keeping any handlers a
program installed itself. Reads go through Ferry's fsspec filesystem (one cached
connection per server, read-ahead); the response is a read-only file with a
Content-Length header.
"""

from __future__ import annotations

import email.message
import urllib.request
import urllib.response
from typing import IO, Any


class NfsHandler(urllib.request.BaseHandler):
    """Opens ``nfs://`` URLs (the libnfs syntax of ``ferry.connect``) for reading."""

    def nfs_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        import fsspec  # here: importing fsspec costs ~50 ms, only paid by nfs URL users

        url = req.full_url
        if req.data is not None:
            raise urllib.error.URLError(f"{url}: nfs URLs are read-only through urllib")
        try:
            fs, path = fsspec.core.url_to_fs(url)
            size = fs.size(path)
            f: IO[bytes] = fs.open(path, "rb")
        except OSError as exc:
            raise urllib.error.URLError(exc) from exc
        headers = email.message.Message()
        headers["Content-Length"] = str(size)
        return urllib.response.addinfourl(f, headers, url)


def install() -> None:
    """Make urllib's global opener handle ``nfs://`` (idempotent, keeps other handlers)."""
    opener: Any = urllib.request._opener  # type: ignore[attr-defined]
    if opener is None:
        urllib.request.install_opener(urllib.request.build_opener(NfsHandler))
    elif not any(isinstance(h, NfsHandler) for h in opener.handlers):
        opener.add_handler(NfsHandler())
