"""The command-line face of ``ferry.client.retry``: ``--hard``/``--soft``, ``--timeout``,
``--retrans`` and ``--retry-for``, the same on ``ferry mount`` and every client command.

Options left out are ``None``, so that a URL's libnfs arguments (``timeo``, ``retrans``,
``autoreconnect``) and then the policy's defaults decide; only ``--retry-for``'s default
differs between faces (the mount's is forever, as a kernel hard mount's).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from ferry.client.retry import DEFAULT_RETRANS, DEFAULT_RETRY_FOR, DEFAULT_TIMEOUT


def at_least(low: float, kind: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` no smaller than ``low``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if math.isnan(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}: {text}")
        return value

    return parse


def add_retry_options(p: argparse.ArgumentParser, retry_for: float = DEFAULT_RETRY_FOR) -> None:
    """The policy's options on ``p``; ``retry_for``: what ``--hard`` waits by default."""
    g = p.add_argument_group("when the server stops answering")
    hard = g.add_mutually_exclusive_group()
    forever = "forever" if math.isinf(retry_for) else f"up to --retry-for, {retry_for:g} s"
    hard.add_argument(
        "--hard", dest="hard", action="store_true", default=None,
        help=f"wait for a server that went away, {forever} (default)",
    )  # fmt: skip
    hard.add_argument(
        "--soft", dest="hard", action="store_false", help="give up after --retrans resends"
    )
    g.add_argument(
        "--timeout", type=at_least(0.001), metavar="S",
        help=f"seconds before a call is first resent (doubles); default {DEFAULT_TIMEOUT:g}",
    )  # fmt: skip
    g.add_argument(
        "--retrans", type=at_least(0, int), metavar="N",
        help=f"resends before a soft client fails; default {DEFAULT_RETRANS}",
    )  # fmt: skip
    g.add_argument(
        "--retry-for", type=at_least(0.001), metavar="S",
        help=f"seconds a hard client waits for the server ('inf': forever); default {retry_for:g}",
    )  # fmt: skip


def retry_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The policy settings given on the command line, as ``connect()``'s keywords."""
    given = {k: getattr(args, k, None) for k in ("hard", "timeout", "retrans", "retry_for")}
    return {k: v for k, v in given.items() if v is not None}
