"""asyncio on Joyride: standard streams, transports and servers (``joyride.asyncio``)."""

from joyride.aio.api import create_connection, create_server, open_connection, start_server
from joyride.aio.server import JoyrideServer
from joyride.aio.transport import JoyrideTransport

__all__ = ["JoyrideServer", "JoyrideTransport", "create_connection", "create_server",
           "open_connection", "start_server"]
