"""joyride.asyncio between two in-memory stacks: streams, protocols, flow control."""

from __future__ import annotations

import asyncio
import hashlib
import os

from api_memory import PORT

import joyride.asyncio as jasyncio
from joyride.embed.stack import Stack

A_HOST = "198.18.0.1"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_stream_echo_hash(stacks: tuple[Stack, Stack]) -> None:
    server_stack, client_stack = stacks
    payload = os.urandom(1 << 20)

    async def main() -> bytes:
        server = await jasyncio.start_server(_echo, A_HOST, PORT, stack=server_stack)
        async with server:
            reader, writer = await jasyncio.open_connection(A_HOST, PORT, stack=client_stack)
            assert writer.get_extra_info("peername") == (A_HOST, PORT)

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            echoed = await asyncio.wait_for(reader.read(), 30)
            await sender
            writer.close()
            await writer.wait_closed()
        return echoed

    echoed = asyncio.run(main())
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
