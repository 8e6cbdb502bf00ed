"""``advise_huge_pages``: advises large writable buffers only, and leaves no export behind
(the BytesIO of ``read_file`` must be able to release its view afterwards)."""

from __future__ import annotations

import io
import sys

import pytest

from ferry.client.hugepages import MIN_ADVISED, advise_huge_pages


@pytest.mark.skipif(sys.platform != "linux", reason="madvise(MADV_HUGEPAGE) is Linux's")
def test_a_large_fresh_buffer_is_advised_and_released() -> None:
    out = io.BytesIO(bytes(MIN_ADVISED * 2))
    with out.getbuffer() as view:
        assert advise_huge_pages(view)
        view[-1] = 7
    assert out.getvalue()[-1] == 7  # the view was released: getvalue works, data kept


def test_small_or_read_only_buffers_are_left_alone() -> None:
    assert not advise_huge_pages(memoryview(bytearray(MIN_ADVISED - 1)))
    assert not advise_huge_pages(memoryview(bytes(MIN_ADVISED)))
