"""The inference engine: its own process, serving the model over a Unix socket to the web process.

The node starts it when the node starts, without Ignite, and Ignite/Stop leave it alone (a person who
stopped collecting and training still wants the chat to answer); it is stopped and started on its own
with POST /api/engines/inference/control. If it crashes, the node restarts it, and the requests in flight
get a clear error from the web process (their connection closed before the last frame).

Three threads: the main one runs the InferenceService (the model work), one runs an asyncio loop that
accepts connections and moves frames (see serve/protocol.py), and one keeps the RAG passage index up to
date with new documents. Until training has written a checkpoint, torch is not even imported: requests
get a 503 that says so, and the process costs next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from aifactory.cluster.context import EngineContext
from aifactory.locks import LockHeld, file_lock
from aifactory.serve import catalog, protocol
from aifactory.settings import Settings
from aifactory.train import sharing

log = logging.getLogger("aifactory.serve")

WAIT_SEC = 2.0  # how often a waiting engine looks for a first checkpoint
REPORT_EVERY_SEC = 2.0


class EngineBusy(RuntimeError):
    """Another inference engine serves this data directory."""


@contextlib.contextmanager
def engine_lock(settings: Settings) -> Any:
    directory = protocol.serve_dir(settings)
    try:
        with file_lock(directory / "inference.lock", f"pid {os.getpid()}"):
            yield
    except LockHeld as held:
        raise EngineBusy(f"{directory} is served by another inference engine ({held.holder})") from None


def _error(status: int, message: str, code: str, retry_after: int | None = None) -> dict[str, Any]:
    return {
        "event": "error",
        "final": True,
        "status": status,
        "message": message,
        "code": code,
        "retry_after": retry_after,
    }


class IpcServer:
    """The asyncio side: one connection per request, frames in and out, EOF = the client left."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = protocol.socket_path(settings)
        self.service: Any = None  # an InferenceService once a model exists
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._closing: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="inference-ipc", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None:
            raise self._failure

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the constructor, which raises it in the engine
            self._failure = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._closing = asyncio.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a process that died; the engine lock says none is running
        server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        os.chmod(self.path, 0o600)
        self._ready.set()
        await self._closing.wait()
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        if self._closing is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._closing.set)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = None
        try:
            message = await protocol.read_frame(reader)
            if message is None:
                return
            if message.get("op") != "generate":
                writer.write(protocol.encode(_error(400, f"unknown op {message.get('op')!r}", "bad_op")))
                return
            service = self.service
            if service is None:
                if catalog.available(self.settings):
                    frame = _error(503, "the inference engine is starting; retry in a moment", "starting", 2)
                else:
                    frame = _error(503, "training has not produced a model yet", "no_model", 10)
                writer.write(protocol.encode(frame))
                return
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            loop = self.loop

            def sink(event: dict[str, Any]) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is listening
                    loop.call_soon_threadsafe(events.put_nowait, event)

            try:
                request = service.submit(message, sink)
            except Exception as exc:  # QueueFull (a ServiceError) carries its status
                event = exc.event() if hasattr(exc, "event") else _error(500, str(exc), "error")
                writer.write(protocol.encode(event))
                return
            gone = asyncio.ensure_future(reader.read(1))  # completes when the client closes
            try:
                while True:
                    next_event = asyncio.ensure_future(events.get())
                    done, _ = await asyncio.wait({next_event, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if next_event not in done:
                        next_event.cancel()
                        service.cancel(request)
                        return
                    event = next_event.result()
                    writer.write(protocol.encode(event))
                    await writer.drain()
                    if event.get("final"):
                        request = None
                        return
            finally:
                gone.cancel()
        except (ConnectionError, protocol.ProtocolError, asyncio.IncompleteReadError):
            if request is not None and self.service is not None:
                self.service.cancel(request)
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await writer.drain()
            writer.close()


class Reporter:
    """The engine's phase and counters for the dashboard, written at most every REPORT_EVERY_SEC."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.at = 0.0
        self.served = self.tokens = 0
        self.error = ""

    def __call__(self, service: Any, indexer: Any) -> None:
        now = time.monotonic()
        if now - self.at < REPORT_EVERY_SEC:
            return
        self.at = now
        state = service.state()
        if state["last_error"] and state["last_error"] != self.error:
            self.error = state["last_error"]
            self.ctx.log(self.error, level="error")
        self.ctx.count(
            requests=state["served"] - self.served,
            tokens_generated=state["tokens"] - self.tokens,
            **indexer.take_counts(),
        )
        self.served, self.tokens = state["served"], state["tokens"]
        self.ctx.set_phase("serving", describe(state))


def describe(state: dict[str, Any]) -> str:
    models = state["loaded"]
    if models:
        model = models[0]
        what = (
            f"{model['name'] or 'model'} {model['checkpoint']} (step {model['step']:,}, "
            f"{model['parameters']:,} parameters{', int8' if model['quantized'] else ''}, {model['device']})"
        )
        if len(models) > 1:
            what += f" and {len(models) - 1} more"
    elif state["loading"]:
        what = f"loading {', '.join(state['loading'])}"
    else:
        what = "no model loaded yet (the first request loads it)"
    text = (
        f"{what}; {state['active']} decoding, {state['queued']} waiting; "
        f"{state['served']:,} requests, {state['tokens']:,} tokens"
    )
    if state["last_error"]:
        text += f"; last error: {state['last_error']}"
    return text


def run(ctx: EngineContext) -> None:
    """The engine entry point (own process, master role)."""
    from aifactory.serve.rag import Indexer  # no torch

    settings = ctx.settings
    with engine_lock(settings):
        server = IpcServer(settings)
        service = None
        indexer = Indexer(ctx.db, settings, busy=lambda: service is not None and service.busy())
        indexer.start()
        try:
            while not ctx.stopping() and not catalog.available(settings):
                ctx.set_phase(
                    "waiting",
                    "no model yet: training has not produced a checkpoint; requests get a 503 until it does",
                )
                indexer.report(ctx)
                ctx.wait(WAIT_SEC)
            if ctx.stopping():
                return
            from aifactory.serve.service import InferenceService  # imports torch

            service = InferenceService(settings)
            server.service = service
            report = Reporter(ctx)
            ctx.set_phase("serving", describe(service.state()))
            # Preload the default model, so the first chat does not wait for it.
            service.submit({"prompts": [""], "max_tokens": 0, "warmup": True}, lambda event: None)

            def stopping() -> bool:
                report(service, indexer)
                return ctx.stopping()

            service.run(stopping)
        finally:
            indexer.stop()
            server.close()
            if service is None:
                sharing.clear_load(settings)


def socket_exists(settings: Settings) -> bool:
    return Path(protocol.socket_path(settings)).exists()
