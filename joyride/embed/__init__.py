"""Embedded mode: the engine inside this process (``joyride.embed(...)``).

``embed`` attaches steering and AF_XDP sockets and builds a ``Stack`` (the service's
engine plus a lock and endpoint callbacks); drivers poll it from the asyncio loop or a
background thread; ``select`` decides which ports and destinations it serves.
"""

from joyride.embed.drivers import AsyncioDriver, ThreadDriver
from joyride.embed.embedded import DEFAULT_EPHEMERAL, Embedded, EmbedError, current, embed
from joyride.embed.stack import Stack

__all__ = ["DEFAULT_EPHEMERAL", "AsyncioDriver", "EmbedError", "Embedded", "Stack",
           "ThreadDriver", "current", "embed"]
