"""The server model registry: ``ferry serve --model NAME`` picks ``MODELS[NAME]``."""

from __future__ import annotations

from ferry.server.aio import AsyncModel
from ferry.server.prefork import PreforkServer
from ferry.server.process import ProcessServer
from ferry.server.serial import SerialServer
from ferry.server.skeleton import ServerModel
from ferry.server.thread import ThreadServer

MODELS: dict[str, type[ServerModel]] = {
    "serial": SerialServer,  # one connection at a time
    "prefork": PreforkServer,  # N serial workers made up front
    "process": ProcessServer,  # a forked child per connection
    "thread": ThreadServer,  # a thread per connection
    "async": AsyncModel,  # an event loop; N of them with --workers N
}
