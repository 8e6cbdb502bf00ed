"""pytest-facing tool checks: a missing third-party binary fails the test, never skips it."""

from __future__ import annotations

import pytest

from . import peers


def require_tool(name: str, package: str) -> str:
    """Return the path of binary `name`; pytest.fail with the Debian package to install."""
    path = peers.find_tool(name)
    if path is None:
        pytest.fail(peers.tool_missing_message(name, package), pytrace=False)
    return path
