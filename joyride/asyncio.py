"""``joyride.asyncio``: the asyncio API on Joyride (implementation in ``joyride.aio``).

Swap ``asyncio.start_server``/``open_connection``/``loop.create_server``/
``loop.create_connection`` for these and a server runs on Joyride wherever a Joyride
stack owns the port (``joyride.embed``), on the kernel elsewhere. The objects returned
are the standard ``StreamReader``/``StreamWriter``, transports and servers.
"""

from joyride.aio import (
    JoyrideServer,
    JoyrideTransport,
    create_connection,
    create_server,
    open_connection,
    start_server,
)

__all__ = ["JoyrideServer", "JoyrideTransport", "create_connection", "create_server",
           "open_connection", "start_server"]
