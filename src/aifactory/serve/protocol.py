"""How the web process and the inference process talk: frames of JSON over a Unix socket.

The inference engine listens on `socket_path(settings)` (DATA_DIR/serve/inference.sock, or a short path
under the runtime directory when DATA_DIR is too deep for a socket name). One connection carries one
request: the client writes one frame, the server answers with frames until one has `"final": true`.
A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. Closing the connection is how a
client says "I am gone": the server cancels the request and frees its decoding slot at once.

The inference process also publishes its load in DATA_DIR/serve/load.json (train/sharing.py): the trainer
reads it to yield the cores while people chat, the web process for /metrics and /ollama/api/ps.

Nothing here imports torch: the web process uses this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

from aifactory.settings import Settings

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a batch of long prompts with echo + logprobs stays well below this
SOCKET_NAME_LIMIT = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class ProtocolError(Exception):
    """The other side sent something that is not a frame, or went away mid-frame."""


def serve_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "serve"


def socket_path(settings: Settings) -> Path:
    """Where the inference engine listens. Both processes compute the same path from the settings."""
    path = (serve_dir(settings) / "inference.sock").resolve()
    if len(str(path)) <= SOCKET_NAME_LIMIT:
        return path
    # Too long for a socket name: a short one under the runtime directory, named after DATA_DIR.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(runtime) / f"aifactory-{os.getuid()}-{digest}.sock"


def load_path(settings: Settings) -> Path:
    return serve_dir(settings) / "load.json"


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data):,} bytes exceeds {MAX_FRAME:,}")
    return HEADER.pack(len(data)) + data


def _decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None when the other side closed the connection between frames."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame header") from None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size:,} bytes exceeds {MAX_FRAME:,}")
    try:
        return _decode(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            if left == size:
                return None
            raise ProtocolError("connection closed inside a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame_blocking(sock: socket.socket) -> dict[str, Any] | None:
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size:,} bytes exceeds {MAX_FRAME:,}")
    data = _recv_exactly(sock, size)
    if data is None:
        raise ProtocolError("connection closed inside a frame")
    return _decode(data)
