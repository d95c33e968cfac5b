"""The web process's side of the socket: send a request, read its frames, close to cancel.

`open_stream` is an async context manager, so however the caller stops (the HTTP client disconnects and
the response task is cancelled, an exception, a normal end), the connection is closed at once and the
inference engine frees the request's slot. A connection that ends before the last frame means the
inference process died mid-request: InferenceCrashed, which the APIs turn into a clear error.
No torch here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aifactory.serve import protocol
from aifactory.settings import Settings


class InferenceUnavailable(Exception):
    """Nothing listens on the socket: the inference engine is not running (or still starting)."""


class InferenceCrashed(Exception):
    """The inference process went away in the middle of a request."""


class Stream:
    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.finished = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[dict[str, Any]]:
        while not self.finished:
            try:
                frame = await protocol.read_frame(self._reader)
            except (ConnectionError, protocol.ProtocolError):
                frame = None
            if frame is None:
                raise InferenceCrashed("the inference process stopped while answering (it is restarted)")
            if frame.get("final"):
                self.finished = True
            yield frame


@contextlib.asynccontextmanager
async def open_stream(settings: Settings, payload: dict[str, Any]) -> AsyncIterator[Stream]:
    path = protocol.socket_path(settings)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError, OSError) as exc:
        raise InferenceUnavailable(f"the inference engine is not running ({type(exc).__name__})") from None
    try:
        writer.write(protocol.encode({"op": "generate", **payload}))
        await writer.drain()
        yield Stream(reader)
    except (ConnectionError, BrokenPipeError):
        raise InferenceCrashed("the inference process closed the connection") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


@contextlib.contextmanager
def open_stream_blocking(settings: Settings, payload: dict[str, Any]) -> Iterator[Iterator[dict[str, Any]]]:
    """The same for synchronous callers (the CLI); closing the iterator's connection cancels."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(protocol.socket_path(settings)))
    except OSError as exc:
        sock.close()
        raise InferenceUnavailable(f"the inference engine is not running ({type(exc).__name__})") from None

    def frames() -> Iterator[dict[str, Any]]:
        while True:
            try:
                frame = protocol.read_frame_blocking(sock)
            except (OSError, protocol.ProtocolError):
                frame = None
            if frame is None:
                raise InferenceCrashed("the inference process stopped while answering (it is restarted)")
            yield frame
            if frame.get("final"):
                return

    try:
        sock.sendall(protocol.encode({"op": "generate", **payload}))
        yield frames()
    finally:
        sock.close()
