"""The inference service: models loaded on demand, requests decoded together, tokens streamed out.

    submit(request, sink) ─► inbox ─► (model loaded?) ─► render prompt ─► queue of that model's batch
                                                                              │ a free slot
    sink(event) ◄── detokenize, stop strings ◄── sample ◄── decode step ◄── prefill (in chunks)

One thread runs `run()`: every iteration it takes new requests, lets the batch of every loaded model
admit queued requests into free slots, feeds one prefill chunk, runs one decode step for all active
rows, and retires finished or cancelled requests, so a request joins the running batch at the next step
and a client that leaves frees its slot at the next step. Models load in a second thread; until a
newer checkpoint has loaded, requests keep going to the previous one, and requests in flight always
finish on the model they started on (hot switch). A checkpoint that fails to load is reported and the
previous model keeps serving.

`sink(event)` is called from the service thread with plain dicts (see docs/serving.md): `start` once
the prompt is in (prompt tokens, truncation, sources, echo log-probabilities), `token` with text,
`end` with the finish reason, usage and timings, and a last event with `final: true`.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aifactory.autotune import cpu_cores
from aifactory.model.config import ModelConfig
from aifactory.model.llama import Transformer
from aifactory.serve import catalog
from aifactory.serve.batch import ServingModel, SlotCache, decode, prefill
from aifactory.serve.sampling import MAX_TOP_LOGPROBS, Sampler, SamplingParams, top_logprobs
from aifactory.serve.template import (
    Passage,
    Prompt,
    PromptTooLong,
    chat_prompt,
    ids_prompt,
    stop_ids,
    text_prompt,
)
from aifactory.settings import Settings
from aifactory.train import sharing
from aifactory.train.checkpoint import CheckpointError, read_checkpoint

log = logging.getLogger("aifactory.serve")
Sink = Callable[[dict[str, Any]], None]

PREFILL_CHUNK = 256  # prompt tokens fed per iteration, so other streams keep flowing meanwhile
NAME_IDLE_SEC = 900.0  # a model name not asked for in this long is no longer kept loaded or preloaded
PUBLISH_EVERY_SEC = 2.0
REPLACEMENT = "\ufffd"


class ServiceError(Exception):
    """A request that cannot be served; `status` is the HTTP status the APIs answer with."""

    def __init__(self, status: int, message: str, code: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.retry_after = status, message, code, retry_after

    def event(self) -> dict[str, Any]:
        return {
            "event": "error",
            "final": True,
            "status": self.status,
            "message": self.message,
            "code": self.code,
            "retry_after": self.retry_after,
        }


@dataclass
class LoadedModel:
    entry: catalog.ModelEntry
    tokenizer: Any  # aifactory.dataset.tokenizer.Tokenizer
    model: ServingModel
    batch: Batch
    loaded_at: float = field(default_factory=time.time)
    stop_ids: set[int] = field(default_factory=set)
    never: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __post_init__(self) -> None:
        self.stop_ids = stop_ids(self.tokenizer)
        sp = self.tokenizer.sp
        self.never = torch.tensor(
            sorted({sp.unk_id(), sp.bos_id(), sp.pad_id()} - {-1}), device=self.model.device
        )

    @property
    def context(self) -> int:
        return self.model.config.max_seq_len

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.entry.name,
            "checkpoint": self.entry.checkpoint,
            "step": self.entry.step,
            "parameters": self.entry.parameters,
            "size_bytes": self.entry.size_bytes,
            "digest": self.entry.digest,
            "context_length": self.context,
            "quantized": self.model.quantized,
            "device": str(self.model.device),
            "loaded_at": self.loaded_at,
            "cache_bytes": self.batch.cache.nbytes(),
        }


@dataclass
class Job:
    """One sequence to generate (a request with several prompts has one job per prompt)."""

    request: Request
    index: int
    prompt: Prompt | None = None
    model: LoadedModel | None = None
    sampler: Sampler | None = None
    context: int = 0
    prefilled: int = 0
    generated: list[int] = field(default_factory=list)
    last_token: int = -1
    text: str = ""  # decoded so far (after the stop-string cut, once finished)
    sent: int = 0  # characters of `text` already sent
    done_ids: int = 0  # generated ids whose text is final (complete characters)
    done_text: str = ""
    pending: list[dict[str, Any]] = field(default_factory=list)  # token log-probs not sent yet
    last_logprobs: torch.Tensor | None = None  # of the previous prompt position (echo)
    spans: SpanTracker | None = None  # the text each token adds, for log-probability offsets
    finish_reason: str | None = None
    admitted_at: float = 0.0
    prefill_seconds: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def position(self) -> int:
        """Where the last token sits: the next decode step feeds it there."""
        assert self.prompt is not None
        return len(self.prompt.ids) + len(self.generated) - 1


@dataclass
class Request:
    """What a client asked for: one or more prompts with the same settings."""

    payload: dict[str, Any]
    sink: Sink
    id: int
    received_at: float = field(default_factory=time.monotonic)
    jobs: list[Job] = field(default_factory=list)
    name: str = catalog.DEFAULT
    cancelled: bool = False
    finished: bool = False
    open_jobs: int = 0

    @property
    def params(self) -> SamplingParams:
        return SamplingParams.from_dict(self.payload.get("sampling"))


class Batch:
    """The requests decoding on one model: queued, one prefilling, and the active rows."""

    def __init__(self, model: ServingModel, slots: int) -> None:
        device, dtype = model.device, torch.float32
        self.slots = slots
        self.cache = SlotCache(model.config, slots, device, dtype)
        self.scratch = SlotCache(model.config, 1, device, dtype)
        self.queue: deque[Job] = deque()
        self.prefilling: Job | None = None
        self.rows: list[Job] = []

    def jobs(self) -> list[Job]:
        return [*self.queue, *([self.prefilling] if self.prefilling else []), *self.rows]

    def busy(self) -> bool:
        return bool(self.queue or self.prefilling or self.rows)


class QueueFull(ServiceError):
    pass


def serving_threads(settings: Settings) -> int:
    """SERVE_THREADS, or half the cores: decoding a few streams gains little from more threads, and
    the other half stays with the trainer (which yields to one thread) and the rest of the node, so
    no core is oversubscribed (a thread pool on a busy core stalls at every barrier)."""
    return settings.serve_threads or max(1, cpu_cores() // 2)


class InferenceService:
    def __init__(self, settings: Settings, *, publish: bool = True) -> None:
        self.settings = settings
        self.publish_load = publish
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(serving_threads(settings))
        self.capacity = settings.serve_max_batch + settings.serve_queue_size
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: deque[Request] = deque()
        self._open = 0  # requests accepted and not finished (what the capacity limits)
        self._ids = itertools.count(1)
        self.models: dict[Path, LoadedModel] = {}
        self.good: dict[str, Path] = {}  # per model name: the newest checkpoint that loaded
        self.failed: dict[Path, str] = {}  # checkpoints that failed to load, and why
        self.used: dict[str, float] = {}  # model names asked for, and when
        self.parked: dict[Path, list[Request]] = {}  # waiting for their model to load
        self.loading: set[Path] = set()
        self._load_queue: queue.Queue[Path | None] = queue.Queue()
        self._loaded: queue.Queue[tuple[Path, LoadedModel | None, str]] = queue.Queue()
        self._loader = threading.Thread(target=self._load_loop, name="model-loader", daemon=True)
        self._loader.start()
        self.served = 0
        self.tokens_out = 0
        self.last_error = ""
        self._polled = self._published = 0.0
        self._published_counts: tuple[int, int, int] | None = None

    # --- the client side (any thread) ---------------------------------------------------------------------
    def submit(self, payload: dict[str, Any], sink: Sink) -> Request:
        """Accept a request (or raise QueueFull); its events go to `sink` from the service thread."""
        with self._lock:
            if self._open >= self.capacity:
                raise QueueFull(
                    503,
                    f"the inference queue is full ({self.settings.serve_max_batch} decoding, "
                    f"{self.settings.serve_queue_size} waiting): retry shortly",
                    "queue_full",
                    retry_after=self.settings.serve_retry_after_sec,
                )
            self._open += 1
            request = Request(payload=payload, sink=sink, id=next(self._ids))
            self._inbox.append(request)
            self._wake.notify()
        return request

    def cancel(self, request: Request) -> None:
        """The client left: drop the request at the next step (its slot is free at once)."""
        with self._lock:
            request.cancelled = True
            self._wake.notify()

    def busy(self) -> bool:
        """Requests are being answered (or wait): background work in this process should hold off."""
        with self._lock:
            return self._open > 0

    def wake(self) -> None:
        with self._lock:
            self._wake.notify()

    # --- the service thread -----------------------------------------------------------------------------
    def run(self, stopping: Callable[[], bool]) -> None:
        try:
            while not stopping():
                if not self.step():
                    with self._lock:
                        if not self._inbox:
                            self._wake.wait(0.25)
        finally:
            self.shutdown()

    def step(self) -> bool:
        """One iteration; False when there was nothing to compute."""
        now = time.monotonic()
        self._take_loaded()
        self._take_inbox()
        if now - self._polled >= self.settings.serve_model_poll_sec:
            self._polled = now
            self._poll_models()
        worked = False
        for model in list(self.models.values()):
            try:
                worked |= self._advance(model)
            except Exception as exc:  # a bug or out of memory: fail this model's requests, keep serving
                log.exception("inference step failed on %s", model.entry.checkpoint)
                self.last_error = f"inference step failed: {type(exc).__name__}: {exc}"
                error = ServiceError(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error")
                for job in model.batch.jobs():
                    if not job.request.finished:
                        self._fail(job.request, error)
                model.batch = Batch(model.model, self.settings.serve_max_batch)
        self._publish()
        return worked

    def shutdown(self) -> None:
        error = ServiceError(503, "the inference engine is stopping; retry in a moment", "stopping", 2)
        with self._lock:
            waiting = list(self._inbox)
            self._inbox.clear()
        for request in waiting + [r for rs in self.parked.values() for r in rs]:
            self._fail(request, error)
        for model in self.models.values():
            for job in model.batch.jobs():
                self._fail(job.request, error)
        self.parked.clear()
        self._load_queue.put(None)
        if self.publish_load:
            sharing.clear_load(self.settings)

    # --- requests: model, prompt ---------------------------------------------------------------------------
    def _take_inbox(self) -> None:
        with self._lock:
            incoming = list(self._inbox)
            self._inbox.clear()
        for request in incoming:
            self._route_or_fail(request)

    def _route_or_fail(self, request: Request) -> None:
        if request.cancelled:
            self._close(request)
            return
        try:
            self._route(request)
        except ServiceError as exc:
            self._fail(request, exc)

    def _route(self, request: Request) -> None:
        """Send the request to its model now, or park it until that model has loaded."""
        request.name = catalog.canonical(request.payload.get("model"))
        self.used[request.name] = time.monotonic()
        try:
            entry = catalog.resolve(self.settings, request.name)
        except catalog.NoModelYet as exc:
            raise ServiceError(503, str(exc), "no_model", 10) from None
        except catalog.ModelNotFound as exc:
            raise ServiceError(404, str(exc), "model_not_found") from None
        target = entry.directory
        model = self._usable(request.name, target)
        if model is not None:
            self._enqueue(request, model)
            # Accepted: the APIs answer 200 now and stream once a slot is free.
            request.sink({"event": "queued", "waiting": len(model.batch.queue)})
            return
        self.parked.setdefault(target, []).append(request)
        self._request_load(target)

    def _usable(self, name: str, target: Path) -> LoadedModel | None:
        """The loaded model to use for `name` whose checkpoint is now `target`: the target itself when
        loaded, else the previous good one (while the target loads, or when it failed to load); None
        when the request has to wait for the target to load."""
        if target in self.models:
            return self.models[target]
        previous = self.good.get(name)
        if previous is not None and previous in self.models:
            self._request_load(target)  # nothing happens if it is loading already or failed
            return self.models[previous]
        if target in self.failed:
            raise ServiceError(503, f"the model failed to load: {self.failed[target]}", "model_load_failed")
        return None

    def _enqueue(self, request: Request, model: LoadedModel) -> None:
        payload = request.payload
        tokenizer = model.tokenizer
        context = min(model.context, int(payload.get("num_ctx") or model.context))
        max_tokens = int(payload.get("max_tokens", 16))
        echo = bool(payload.get("echo"))
        passages = [Passage(p["url"], p["title"], p["text"]) for p in payload.get("passages") or []]
        prompts: list[Prompt] = []
        prefix = list(payload.get("context_ids") or [])  # Ollama's `context`: the previous exchange
        try:
            if payload.get("messages") is not None:
                prompt = chat_prompt(
                    tokenizer, payload["messages"], context=context, max_tokens=max_tokens, passages=passages
                )
                if prefix:  # then this turn, without a second BOS
                    prompt.ids = prefix + prompt.ids[1:]
                    prompt = _fit(prompt, context, max_tokens)
                prompts.append(prompt)
            else:
                for item in payload.get("prompts") or [""]:
                    if isinstance(item, list):
                        bad = [t for t in item if not 0 <= int(t) < tokenizer.vocab_size]
                        if bad:
                            raise ServiceError(
                                422,
                                f"token ids must lie in 0..{tokenizer.vocab_size - 1}; got {bad[:5]}",
                                "invalid_token",
                            )
                        prompt = ids_prompt(item, context=context, max_tokens=max_tokens, echo=echo)
                        prompt.text = tokenizer.decode(item)
                        prompts.append(prompt)
                    else:
                        prompt = text_prompt(
                            tokenizer,
                            item,
                            context=context,
                            max_tokens=max_tokens,
                            passages=passages,
                            echo=echo,
                        )
                        if prefix:  # the previous exchange, then this prompt (no second BOS)
                            prompt.ids = prefix + prompt.ids[1:]
                            prompt = _fit(prompt, context, max_tokens)
                        prompts.append(prompt)
        except PromptTooLong as exc:
            raise ServiceError(400, str(exc), "context_length_exceeded") from None
        if any(not prompt.ids for prompt in prompts):
            raise ServiceError(422, "the prompt is empty", "empty_prompt")
        params = request.params
        for index, prompt in enumerate(prompts):
            job = Job(request=request, index=index, prompt=prompt, model=model, context=context)
            seed = params.seed if params.seed is None else params.seed + index
            job.sampler = Sampler(
                SamplingParams(**{**params.__dict__, "seed": seed}), model.model.config.vocab_size
            )
            request.jobs.append(job)
            model.batch.queue.append(job)
        request.open_jobs = len(request.jobs)

    # --- models -------------------------------------------------------------------------------------------
    def _request_load(self, directory: Path) -> None:
        if directory not in self.loading and directory not in self.models and directory not in self.failed:
            self.loading.add(directory)
            self._load_queue.put(directory)

    def _load_loop(self) -> None:
        while True:
            directory = self._load_queue.get()
            if directory is None:
                return
            try:
                model, error = self._load(directory), ""
            except Exception as exc:  # any failure to load is reported, the previous model keeps serving
                model, error = None, f"{type(exc).__name__}: {exc}"
                if not directory.exists():
                    error = ""  # replaced and deleted by the trainer meanwhile: nothing is wrong
            self._loaded.put((directory, model, error))
            self.wake()

    def _load(self, directory: Path) -> LoadedModel:
        from aifactory.dataset.tokenizer import Tokenizer

        checkpoint = read_checkpoint(directory, map_location="cpu", optimizer=False)
        config = ModelConfig.from_dict(checkpoint.meta["model"])
        tokenizer_hash = str(checkpoint.meta.get("tokenizer_hash", ""))
        where = catalog.tokenizer_dir(self.settings, tokenizer_hash)
        if where is None:
            raise CheckpointError(
                f"{directory.name} was trained with tokenizer {tokenizer_hash[:16]}, which is not in "
                f"{Path(self.settings.data_dir) / 'tokenizer'}"
            )
        tokenizer = Tokenizer(where)
        if tokenizer.vocab_size != config.vocab_size:
            raise CheckpointError(
                f"{directory.name} has a vocabulary of {config.vocab_size} but its tokenizer has "
                f"{tokenizer.vocab_size} pieces"
            )
        network = Transformer(config)
        network.load_state_dict(checkpoint.weights, strict=True)
        quantize = self.settings.enable_cpu_quantization and self.device.type == "cpu"
        model = ServingModel(network.to(self.device), quantize=quantize)
        entry = catalog.ModelEntry(name="", directory=directory, meta=checkpoint.meta)
        return LoadedModel(entry, tokenizer, model, Batch(model, self.settings.serve_max_batch))

    def _take_loaded(self) -> None:
        while True:
            try:
                directory, model, error = self._loaded.get_nowait()
            except queue.Empty:
                return
            self.loading.discard(directory)
            if model is not None:
                self.models[directory] = model
                name = catalog.name_of(self.settings, directory)
                model.entry = catalog.ModelEntry(name, directory, model.entry.meta)
                for used in list(self.used):
                    with _quiet():
                        if catalog.resolve(self.settings, used).directory == directory:
                            self.good[used] = directory
                log.info("loaded %s (%s parameters)", directory.name, f"{model.entry.parameters:,}")
            elif error:
                self.failed[directory] = error
                self.last_error = f"{directory.name} failed to load: {error}"
                log.error("%s", self.last_error)
            for request in self.parked.pop(directory, []):
                self._route_or_fail(request)

    def _poll_models(self) -> None:
        """Hot switch: load the newest checkpoint of every name in use; unload what nothing uses."""
        now = time.monotonic()
        for name, at in list(self.used.items()):
            if now - at > NAME_IDLE_SEC:
                del self.used[name]
                continue
            with _quiet():
                target = catalog.resolve(self.settings, name).directory
                if target in self.models:
                    self.good[name] = target
                else:
                    self._request_load(target)
        keep = set(self.good.get(name) for name in self.used)
        for directory, model in list(self.models.items()):
            if directory not in keep and not model.batch.busy():
                del self.models[directory]
                log.info("unloaded %s", directory.name)
        for directory in list(self.failed):
            if not directory.exists():
                del self.failed[directory]

    # --- computing ----------------------------------------------------------------------------------------
    def _advance(self, model: LoadedModel) -> bool:
        batch = model.batch
        for job in [job for job in batch.jobs() if job.request.cancelled or job.request.finished]:
            self._drop(batch, job)
        worked = False
        if batch.prefilling is None and batch.queue and len(batch.rows) < batch.slots:
            job = batch.queue.popleft()
            job.admitted_at = time.monotonic()
            batch.prefilling = job
        if batch.prefilling is not None:
            self._prefill_chunk(model, batch.prefilling)
            worked = True
        if batch.rows:
            self._decode_step(model)
            worked = True
        return worked

    def _prefill_chunk(self, model: LoadedModel, job: Job) -> None:
        batch, prompt = model.batch, job.prompt
        assert prompt is not None
        started = time.perf_counter()
        want_logprobs = job.request.payload.get("echo") and job.request.payload.get("logprobs") is not None
        chunk = prompt.ids[job.prefilled : job.prefilled + PREFILL_CHUNK]
        logits = prefill(model.model, batch.scratch, 0, chunk, job.prefilled, all_logits=bool(want_logprobs))
        if want_logprobs:
            job.pending.extend(self._prompt_logprobs(model, job, chunk, logits))
        job.prefilled += len(chunk)
        job.prefill_seconds += time.perf_counter() - started
        if job.prefilled < len(prompt.ids):
            return
        batch.prefilling = None
        self._emit(job, self._start_event(job))
        if int(job.request.payload.get("max_tokens", 16)) <= 0:  # echo only: nothing is generated
            self._finish(batch, job, "length")
            return
        if len(prompt.ids) >= job.context:
            self._finish(batch, job, "length")
            return
        batch.cache.copy_row(batch.scratch, 0, len(batch.rows), len(prompt.ids))
        batch.rows.append(job)
        self._accept(model, job, logits[-1])

    def _prompt_logprobs(
        self, model: LoadedModel, job: Job, chunk: list[int], logits: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Per prompt token: its log-probability given what precedes it (None for the first token)."""
        k = min(int(job.request.payload.get("logprobs") or 0), MAX_TOP_LOGPROBS)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        entries = []
        start = job.prefilled
        prompt = job.prompt
        assert prompt is not None
        for offset, token in enumerate(chunk):
            position = start + offset
            row = job.last_logprobs
            if position == 0 or row is None:
                entries.append(self._logprob_entry(job, token, None, []))
            else:
                entries.append(self._logprob_entry(job, token, float(row[token]), top_logprobs(row, k)))
            job.last_logprobs = logprobs[offset]
        return entries

    def _logprob_entry(
        self, job: Job, token: int, logprob: float | None, top: list[tuple[int, float]]
    ) -> dict[str, Any]:
        model = job.model
        assert model is not None
        if job.spans is None:
            job.spans = SpanTracker(model.tokenizer)
        return {
            "id": token,
            "span": job.spans.push(token),
            "text": token_text(model.tokenizer, token),
            "logprob": logprob,
            "top": [[token_text(model.tokenizer, i), lp, i] for i, lp in top],
        }

    def _decode_step(self, model: LoadedModel) -> None:
        batch = model.batch
        device = model.model.device
        tokens = torch.tensor([job.last_token for job in batch.rows], device=device)
        positions = torch.tensor([job.position for job in batch.rows], device=device)
        logits = decode(model.model, batch.cache, tokens, positions)
        for job, row in zip(list(batch.rows), logits, strict=True):
            self._accept(model, job, row)

    def _accept(self, model: LoadedModel, job: Job, logits: torch.Tensor) -> None:
        """Choose the next token from `logits` (of the last position), and emit or finish."""
        assert job.sampler is not None and job.prompt is not None
        payload = job.request.payload
        if job.sampler.params.plain:
            processed = logits.clone()
        else:
            processed = job.sampler.process(logits, job.prompt.ids + job.generated, job.generated)
        processed[model.never] = -math.inf  # <unk>, <s>, <pad> are never an answer's text (index tensor)
        token = job.sampler.choose(processed)
        now = time.monotonic()
        if job.first_token_at is None:
            job.first_token_at = now
        job.generated.append(token)
        job.last_token = token
        self.tokens_out += 1
        if payload.get("logprobs") is not None:
            k = min(int(payload.get("logprobs") or 0), MAX_TOP_LOGPROBS)
            row = torch.log_softmax(logits.float(), dim=-1)
            job.pending.append(self._logprob_entry(job, token, float(row[token]), top_logprobs(row, k)))
        batch = model.batch
        if token in model.stop_ids:
            self._finish(batch, job, "stop")
            return
        stop = self._update_text(model, job)
        if stop:
            self._finish(batch, job, "stop")
        elif len(job.generated) >= int(payload.get("max_tokens", 16)) or job.position + 1 >= job.context:
            self._finish(batch, job, "length")
        else:
            self._send_text(job, final=False)

    def _update_text(self, model: LoadedModel, job: Job) -> bool:
        """Decode the new token(s); True when a stop string appeared (the text is cut before it)."""
        tail = model.tokenizer.decode(job.generated[job.done_ids :])
        job.text = job.done_text + tail
        if not tail.endswith(REPLACEMENT):  # complete characters: later tokens cannot change this text
            job.done_ids, job.done_text = len(job.generated), job.text
        stops = job.request.payload.get("stop") or []
        if stops:
            longest = max(len(s) for s in stops)
            start = max(0, job.sent - longest)
            hits = [i for i in (job.text.find(s, start) for s in stops) if i >= 0]
            if hits:
                job.text = job.text[: min(hits)]
                return True
        return False

    def _safe_length(self, job: Job) -> int:
        """How much of the text can be sent: not a trailing partial character, not the start of a
        stop string that the next tokens may complete."""
        text = job.text
        end = len(text)
        while end > job.sent and text[end - 1] == REPLACEMENT:
            end -= 1
        for stop in job.request.payload.get("stop") or []:
            for k in range(min(len(stop) - 1, end), 0, -1):
                if text.endswith(stop[:k], 0, end):
                    end -= k
                    break
        return max(end, job.sent)

    def _send_text(self, job: Job, *, final: bool) -> None:
        end = len(job.text) if final else self._safe_length(job)
        if end > job.sent or job.pending:
            delta = job.text[job.sent : end]
            job.sent = end
            event: dict[str, Any] = {"event": "token", "index": job.index, "text": delta}
            if job.pending:
                event["logprobs"], job.pending = job.pending, []
            self._emit(job, event)

    def _start_event(self, job: Job) -> dict[str, Any]:
        prompt, model = job.prompt, job.model
        assert prompt is not None and model is not None
        event: dict[str, Any] = {
            "event": "start",
            "index": job.index,
            "model": model.entry.name if job.request.name == catalog.DEFAULT else job.request.name,
            "checkpoint": model.entry.checkpoint,
            "step": model.entry.step,
            "prompt_tokens": len(prompt.ids),
            "truncated_tokens": prompt.truncated,
            "sources": [p.as_dict() for p in prompt.sources],
            "prompt_ids": prompt.ids if job.request.payload.get("return_prompt_ids") else None,
        }
        if job.request.payload.get("echo"):
            event["prompt_text"] = prompt.text
            if job.pending:
                event["logprobs"], job.pending = job.pending, []
        return event

    def _finish(self, batch: Batch, job: Job, reason: str) -> None:
        job.finish_reason = reason
        job.finished_at = time.monotonic()
        job.sent = min(job.sent, len(job.text))
        self._send_text(job, final=True)
        self._remove(batch, job)
        request, prompt = job.request, job.prompt
        assert prompt is not None
        first = job.first_token_at or job.finished_at
        self._emit(
            job,
            {
                "event": "end",
                "index": job.index,
                "finish_reason": reason,
                "text": job.text,
                "generated_ids": job.generated if request.payload.get("return_prompt_ids") else None,
                "usage": {
                    "prompt_tokens": len(prompt.ids),
                    "completion_tokens": len(job.generated),
                    "total_tokens": len(prompt.ids) + len(job.generated),
                    "truncated_tokens": prompt.truncated,
                },
                "timings": {
                    "queued_ms": round(1000 * (job.admitted_at - request.received_at), 3),
                    "prompt_ms": round(1000 * job.prefill_seconds, 3),
                    "time_to_first_token_ms": round(1000 * (first - request.received_at), 3),
                    "decode_ms": round(1000 * (job.finished_at - first), 3),
                    "total_ms": round(1000 * (job.finished_at - request.received_at), 3),
                },
            },
        )
        request.open_jobs -= 1
        if request.open_jobs <= 0:
            self.served += 1
            self._emit(job, {"event": "final", "final": True})
            self._close(request)

    def _remove(self, batch: Batch, job: Job) -> None:
        if job in batch.rows:
            row = batch.rows.index(job)
            last = len(batch.rows) - 1
            if row != last:  # keep the active rows contiguous: the last one moves into the hole
                moved = batch.rows[last]
                batch.cache.copy_row(batch.cache, last, row, moved.position + 1)
                batch.rows[row] = moved
            batch.rows.pop()
        elif batch.prefilling is job:
            batch.prefilling = None
        elif job in batch.queue:
            batch.queue.remove(job)

    def _drop(self, batch: Batch, job: Job) -> None:
        self._remove(batch, job)
        request = job.request
        request.open_jobs -= 1
        if request.open_jobs <= 0:
            self._close(request)

    # --- bookkeeping ----------------------------------------------------------------------------------------
    def _emit(self, job: Job, event: dict[str, Any]) -> None:
        if not job.request.cancelled:
            job.request.sink(event)

    def _fail(self, request: Request, error: ServiceError) -> None:
        if not request.cancelled and not request.finished:
            request.sink(error.event())
        self._close(request)

    def _close(self, request: Request) -> None:
        if request.finished:
            return
        request.finished = True
        with self._lock:
            self._open -= 1

    def counts(self) -> tuple[int, int, int]:
        """(requests in flight, sequences decoding or prefilling, sequences waiting): cheap, every step."""
        active = queued = 0
        for model in self.models.values():
            active += len(model.batch.rows) + (1 if model.batch.prefilling else 0)
            queued += len(model.batch.queue)
        queued += sum(len(requests) for requests in self.parked.values())
        with self._lock:
            return self._open, active, queued + len(self._inbox)

    def state(self) -> dict[str, Any]:
        in_flight, active, queued = self.counts()
        return {
            "in_flight": in_flight,
            "active": active,
            "queued": queued,
            "capacity": self.capacity,
            "slots": self.settings.serve_max_batch,
            "served": self.served,
            "tokens": self.tokens_out,
            "loaded": [model.describe() for model in self.models.values()],
            "loading": sorted(path.name for path in self.loading),
            "last_error": self.last_error,
        }

    def _publish(self) -> None:
        """Rewrite the load file when the counts change, and every PUBLISH_EVERY_SEC."""
        if not self.publish_load:
            return
        now = time.monotonic()
        counts = self.counts()
        if counts != self._published_counts or now - self._published >= PUBLISH_EVERY_SEC:
            self._published, self._published_counts = now, counts
            try:
                sharing.publish_load(self.settings, self.state())
            except OSError as exc:  # a full disk must not stop the answers
                log.warning("cannot publish the inference load: %s", exc)


class SpanTracker:
    """The text each token of a sequence adds to its decoded text. A character made of several byte
    tokens belongs to the token that completes it; the others add ""."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.open: list[int] = []  # tokens since the last complete character

    def push(self, token: int) -> str:
        self.open.append(token)
        text = self.tokenizer.decode(self.open)
        if text.endswith(REPLACEMENT) and len(self.open) < 8:
            return ""
        self.open = []
        return text


def token_text(tokenizer: Any, token: int) -> str:
    """A token as text for log-probabilities: its text, or its piece name (`<|end|>`, `<0xE3>`) for
    control and byte tokens, which stand for no text of their own."""
    sp = tokenizer.sp
    if sp.is_control(token) or sp.is_byte(token) or sp.is_unknown(token):
        return sp.id_to_piece(token)
    return tokenizer.decode([token])


def _fit(prompt: Prompt, context: int, max_tokens: int) -> Prompt:
    room = max(1, context - min(max_tokens, context // 2))
    if len(prompt.ids) > room:
        cut = len(prompt.ids) - room
        prompt.ids = prompt.ids[cut:]
        prompt.truncated += cut
    return prompt


class _quiet:
    """Ignore a model name that stopped resolving (a checkpoint replaced while we looked)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, trace: Any) -> bool:
        return kind is not None and issubclass(kind, (catalog.NoModelYet, catalog.ModelNotFound, OSError))
