"""The ``ferry proxy`` command: the link emulator of ``ferry.testing.proxy`` on the command line.

This module owns what only a command line needs: parsing units (``20ms``, ``100mbit``,
``1%``, ``ADDR:PORT``; the benchmark reuses these parsers) and running one proxy in the
foreground until SIGINT/SIGTERM. Bad values are usage errors (exit 2), never tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from ferry import loops
from ferry.errors import ConfigError
from ferry.testing import proxy

T = TypeVar("T")
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"

_EPILOG = """\
units: durations need one (us, ms, s); rates are SI bits per second (bit, kbit, mbit,
gbit; 0 = unlimited); probabilities take % or a fraction. Each direction gets the delay,
the jitter and its own rate. On TCP, --loss is the chance per forwarded chunk (at most
64 KiB) that the connection is reset (--tcp-loss cut, the default; the client must
reconnect and retransmit) or that the stream stalls for --stall (--tcp-loss stall). On UDP
it drops datagrams, and --reorder delivers that fraction of datagrams after their
successor. The same --seed gives the same decisions. See docs/proxy.md.
"""


def _typed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a parser so argparse reports its ValueError message as a usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def add_proxy_command(sub: Any) -> None:
    """Register ``proxy`` on ``ferry``'s subparsers (called from ``cli``)."""
    p = sub.add_parser(
        "proxy",
        help="emulate a network link: delay, jitter, rate limit, loss (TCP and UDP)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hostport = _typed(parse_hostport)
    p.add_argument("--listen", required=True, type=hostport, metavar="ADDR:PORT")
    p.add_argument("--to", required=True, type=hostport, metavar="ADDR:PORT")
    duration, fraction = _typed(parse_duration), _typed(parse_fraction)
    p.add_argument(
        "--delay", metavar="TIME", type=duration, default=0.0, help="one-way delay, e.g. 20ms"
    )
    p.add_argument(
        "--jitter", metavar="TIME", type=duration, default=0.0, help="uniform +-, e.g. 5ms"
    )
    p.add_argument(
        "--rate", metavar="RATE", type=_typed(parse_rate), default=0.0, help="e.g. 100mbit"
    )
    p.add_argument("--loss", metavar="P", type=fraction, default=0.0, help="e.g. 1%% (see below)")
    p.add_argument("--reorder", metavar="P", type=fraction, default=0.0, help="UDP only, e.g. 1%%")
    p.add_argument("--tcp-loss", choices=("cut", "stall"), default="cut")
    p.add_argument(
        "--stall", metavar="TIME", type=duration, default=0.2, help="with --tcp-loss stall"
    )
    p.add_argument("--seed", metavar="N", type=int, default=0, help="seeds every random decision")
    p.add_argument("--udp", action="store_true", help="also forward UDP on the same port")
    p.set_defaults(func=cmd_proxy)


def cmd_proxy(args: argparse.Namespace) -> int:
    try:
        spec = proxy.LinkSpec(
            delay=args.delay, jitter=args.jitter, rate=args.rate, loss=args.loss,
            reorder=args.reorder, seed=args.seed, tcp_loss=args.tcp_loss, stall=args.stall,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return serve(spec, args.to, args.listen, args.udp)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}") from None


# -- units -----------------------------------------------------------------------------------


def _split(text: str, units: dict[str, float], what: str) -> float:
    m = re.fullmatch(_NUMBER + r"\s*([a-z]*)", text.strip().lower())
    if m is None or m.group(2) not in units:
        raise ValueError(f"bad {what} {text!r} (units: {', '.join(units)})")
    return float(m.group(1)) * units[m.group(2)]


def parse_duration(text: str) -> float:
    """``20ms``, ``500us``, ``1.5s`` -> seconds (a unit is required: tc and ping disagree)."""
    return _split(text, _TIME_UNITS, "duration")


def parse_rate(text: str) -> float:
    """``100mbit``, ``2.5gbit``, ``64kbit`` -> bits per second (SI, as tc); 0 = unlimited."""
    return _split(text, _RATE_UNITS, "rate")


def parse_fraction(text: str) -> float:
    """``1%`` -> 0.01; a bare number is a fraction (``0.01``). Must lie in [0, 1]."""
    text = text.strip()
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability out of range 0-100%: {text!r}")
    return value


def parse_hostport(text: str) -> tuple[str, int]:
    """``127.0.0.1:2049`` or ``[::1]:2049`` -> (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:]*):(\d+)", text.strip())
    if m is None:
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 0 <= int(port) < 65536:
        raise ValueError(f"port out of range: {text!r}")
    return host or "127.0.0.1", int(port)


# -- running in the foreground ---------------------------------------------------------------


def serve(spec: proxy.LinkSpec, to: tuple[str, int], listen: tuple[str, int], udp: bool) -> int:
    """Run the proxy in the foreground until SIGINT or SIGTERM (the ``ferry proxy`` CLI)."""
    loop = loops.new_event_loop()
    try:
        return loop.run_until_complete(_serve(spec, to, listen, udp))
    finally:
        loop.close()


async def _serve(
    spec: proxy.LinkSpec, to: tuple[str, int], listen: tuple[str, int], udp: bool
) -> int:
    link = proxy.Proxy(spec, to, listen, udp)
    port = await link.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    transports = "TCP and UDP" if udp else "TCP"
    print(
        f"ferry: proxy {listen[0]}:{port} -> {to[0]}:{to[1]} ({transports}): {spec.describe()}",
        flush=True,
    )
    await stop.wait()
    await link.close()
    proxy.log.info("proxy stopped: %s", link.stats)
    return 0
