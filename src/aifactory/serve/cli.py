"""`aifactory generate "prompt"` and `aifactory chat`: the model in a terminal, token by token.

Where the answers come from:
- `--url http://host:8000`: a running factory, through its native API (generate) or its OpenAI chat
  API (chat), with `--api-key` when it has API_KEYS;
- otherwise the local data directory: through the running inference engine's socket when the factory
  runs here, else the model is loaded in this process (the latest checkpoint, or --model).
RAG (`--rag/--no-rag`, default ENABLE_RAG) searches the local database, or is done by the server.
Ctrl-C stops the answer being written (and in the chat, keeps the conversation); /reset, /quit.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import httpx

from aifactory.autotune import resolve_profile
from aifactory.serve import client, protocol
from aifactory.settings import Settings

Events = Iterator[dict[str, Any]]


class CliError(Exception):
    """Something the person can fix (no model, server unreachable...): printed without a traceback."""


def payload_of(args: Any, settings: Settings) -> dict[str, Any]:
    """The request for the inference engine; with --url, max_tokens None lets the server choose."""
    max_tokens = args.max_tokens
    if max_tokens is None and not args.url:
        max_tokens = min(settings.serve_default_max_tokens, resolve_profile(settings).max_generate_tokens)
    return {
        "model": args.model,
        "max_tokens": max_tokens,
        "stop": args.stop or [],
        "sampling": {
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "repetition_penalty": args.repetition_penalty,
            "seed": args.seed,
        },
    }


# --- where the tokens come from ---------------------------------------------------------------------------
class LocalBackend:
    """The local inference engine over its socket, or the model loaded here when none runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: Any = None

    def passages(self, query: str, use: bool) -> list[dict[str, str]]:
        if not use or not self.settings.enable_rag:
            return []
        from aifactory.db.connect import open_database
        from aifactory.serve import rag

        try:
            if self._db is None:
                self._db = open_database(self.settings)
            return [hit.as_passage() for hit in rag.search(self._db, query, self.settings.rag_passages)]
        except Exception as exc:  # no database or index: answer without sources
            print(f"(no sources: {exc})", file=sys.stderr)
            return []

    @contextlib.contextmanager
    def stream(self, payload: dict[str, Any]) -> Iterator[Events]:
        if self.service is None and protocol.socket_path(self.settings).exists():
            try:
                with client.open_stream_blocking(self.settings, payload) as frames:
                    yield frames
                return
            except client.InferenceUnavailable:
                pass  # a socket left by a factory that is gone: load the model here instead
        yield from self._in_process(payload)

    def _in_process(self, payload: dict[str, Any]) -> Iterator[Events]:
        if self.service is None:
            from aifactory.serve.service import InferenceService  # torch, only now

            self.service = InferenceService(self.settings, publish=False)
            self._thread = threading.Thread(target=self.service.run, args=(self._stop.is_set,), daemon=True)
            self._thread.start()
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        request = self.service.submit(payload, events.put)

        def frames() -> Events:
            while True:
                event = events.get()
                yield event
                if event.get("final"):
                    return

        try:
            yield frames()
        finally:
            self.service.cancel(request)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._db is not None:
            self._db.dispose()


class HttpBackend:
    """A running factory: the native API for one prompt, the OpenAI chat API for a conversation."""

    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=httpx.Timeout(30, read=600)
        )

    def passages(self, query: str, use: bool) -> list[dict[str, str]]:
        return []  # the server retrieves them

    @contextlib.contextmanager
    def stream(self, payload: dict[str, Any]) -> Iterator[Events]:
        if payload.get("messages") is not None:
            body = {
                "model": payload.get("model") or "latest",
                "messages": payload["messages"],
                "max_tokens": payload["max_tokens"],
                "stop": payload["stop"] or None,
                "stream": True,
                "stream_options": {"include_usage": True},
                "rag": payload.get("rag"),
                **{k: v for k, v in payload["sampling"].items() if v is not None},
            }
            path, convert = "/v1/chat/completions", _from_chat_sse
        else:
            body = {
                "prompt": payload["prompts"][0],
                "max_tokens": payload["max_tokens"],
                "stop": payload["stop"] or None,
                "stream": True,
                "rag": payload.get("rag"),
                "model": payload.get("model"),
                **{k: v for k, v in payload["sampling"].items() if v is not None},
            }
            path, convert = "/api/generate", _from_native_sse
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise CliError(f"{response.status_code}: {_error_text(response)}")
                yield convert(response.iter_lines())
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.http.base_url}: {exc}") from None

    def close(self) -> None:
        self.http.close()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message"))
    return str(error or body.get("message") or body)


def _data_lines(lines: Iterator[str]) -> Iterator[dict[str, Any] | str]:
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            yield data if data == "[DONE]" else json.loads(data)


def _from_native_sse(lines: Iterator[str]) -> Events:
    for data in _data_lines(lines):
        if not isinstance(data, dict):
            continue
        kind = data.get("type")
        if kind == "start":
            yield {"event": "start", **data}
        elif kind == "token":
            yield {"event": "token", "text": data["text"]}
        elif kind == "done":
            yield {"event": "end", "finish_reason": data["finish_reason"], "usage": data["usage"],
                   "sources": data["sources"]}  # fmt: skip
            yield {"event": "final", "final": True}
        elif kind == "error":
            yield {"event": "error", "final": True, "message": data.get("message", "")}


def _from_chat_sse(lines: Iterator[str]) -> Events:
    usage: dict[str, Any] = {}
    finish = None
    for data in _data_lines(lines):
        if data == "[DONE]":
            yield {"event": "end", "finish_reason": finish, "usage": usage}
            yield {"event": "final", "final": True}
            return
        assert isinstance(data, dict)
        if "error" in data:
            yield {"event": "error", "final": True, "message": data["error"].get("message", "")}
            return
        if data.get("sources"):
            yield {"event": "start", "sources": data["sources"]}
        usage = data.get("usage") or usage
        for choice in data.get("choices") or []:
            if choice["delta"].get("content"):
                yield {"event": "token", "text": choice["delta"]["content"]}
            finish = choice.get("finish_reason") or finish


# --- the commands -------------------------------------------------------------------------------------------
def backend_for(settings: Settings, args: Any) -> LocalBackend | HttpBackend:
    if args.url:
        return HttpBackend(args.url, args.api_key)
    return LocalBackend(settings)


def answer(backend: Any, payload: dict[str, Any], on_text: Callable[[str], None]) -> dict[str, Any]:
    """Stream one answer; returns {text, sources, usage, finish_reason, model, checkpoint}."""
    try:
        return _answer(backend, payload, on_text)
    except (client.InferenceUnavailable, client.InferenceCrashed) as exc:
        raise CliError(str(exc)) from None


def _answer(backend: Any, payload: dict[str, Any], on_text: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"text": "", "sources": [], "usage": {}, "finish_reason": None}
    with backend.stream(payload) as events:
        for event in events:
            kind = event["event"]
            if kind == "error":
                raise CliError(event.get("message", "generation failed"))
            if kind == "start":
                result["sources"] = event.get("sources") or result["sources"]
                result["model"] = event.get("model")
                result["checkpoint"] = event.get("checkpoint")
            elif kind == "token":
                result["text"] += event["text"]
                on_text(event["text"])
            elif kind == "end":
                result["finish_reason"] = event.get("finish_reason")
                result["usage"] = event.get("usage") or {}
                result["sources"] = event.get("sources") or result["sources"]
                if "text" in event:
                    result["text"] = event["text"]
    return result


def print_sources(sources: list[dict[str, str]], out: TextIO) -> None:
    for number, source in enumerate(sources, 1):
        print(f"  [{number}] {source.get('title') or source['url']} — {source['url']}", file=out)


def generate_command(settings: Settings, args: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    backend = backend_for(settings, args)
    use_rag = settings.enable_rag if args.rag is None else args.rag
    payload = {**payload_of(args, settings), "prompts": [args.prompt], "rag": use_rag}
    payload["passages"] = backend.passages(args.prompt, use_rag)

    def write(text: str) -> None:
        if not args.json:
            out.write(text)
            out.flush()

    try:
        result = answer(backend, payload, write)
    except CliError as exc:
        print(f"aifactory: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[stopped]", file=sys.stderr)
        return 130
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"status": "success", **result}, ensure_ascii=False, indent=2), file=out)
    else:
        out.write("\n")
        if result["sources"]:
            print("sources:", file=out)
            print_sources(result["sources"], out)
    return 0


def chat_command(
    settings: Settings, args: Any, stdin: TextIO | None = None, out: TextIO | None = None
) -> int:
    stdin, out = stdin or sys.stdin, out or sys.stdout
    backend = backend_for(settings, args)
    use_rag = settings.enable_rag if args.rag is None else args.rag
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages: list[dict[str, str]] = list(system)
    interactive = stdin.isatty()
    print(
        "chat with the factory's model: /reset starts over, /quit leaves (Ctrl-C stops an answer)", file=out
    )
    try:
        while True:
            if interactive:
                out.write("you> ")
                out.flush()
            line = stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text == "/reset":
                messages = list(system)
                print("(conversation cleared)", file=out)
                continue
            messages.append({"role": "user", "content": text})
            payload = {**payload_of(args, settings), "messages": messages, "rag": use_rag}
            payload["passages"] = backend.passages(text, use_rag)
            out.write("assistant> ")
            out.flush()

            def write(piece: str) -> None:
                out.write(piece)
                out.flush()

            try:
                result = answer(backend, payload, write)
            except CliError as exc:
                print(f"\n(error: {exc})", file=out)
                messages.pop()
                continue
            except KeyboardInterrupt:
                print("\n[stopped]", file=out)
                messages.pop()
                continue
            out.write("\n")
            if result["sources"]:
                print_sources(result["sources"], out)
            messages.append({"role": "assistant", "content": result["text"]})
    finally:
        backend.close()
    return 0
