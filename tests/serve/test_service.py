"""The inference service in-process: KV-cache decoding, continuous batching, sampling, hot switching."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from aifactory.model.llama import Transformer
from aifactory.serve.service import InferenceService, QueueFull
from aifactory.settings import Settings
from tests.serve.helpers import make_tokenizer, save_checkpoint, serve_settings, tiny_config

NO_STOP = {2: -100.0, 7: -100.0}  # </s> and <|end|> banned: answers run to max_tokens


@dataclass
class Running:
    service: InferenceService
    settings: Settings
    tokenizer: Any
    model: Transformer
    directory: Path


class Collector:
    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        event["at"] = time.monotonic()
        self.events.put(event)

    def next(self, timeout: float = 60) -> dict[str, Any]:
        event = self.events.get(timeout=timeout)
        self.seen.append(event)
        return event

    def until(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        while True:
            event = self.next(timeout)
            if event["event"] == kind or event["event"] == "error":
                return event

    def finish(self, timeout: float = 120) -> list[dict[str, Any]]:
        while not self.seen or not self.seen[-1].get("final"):
            self.next(timeout)
        return self.seen

    def end(self, index: int = 0) -> dict[str, Any]:
        self.finish()
        return next(e for e in self.seen if e["event"] == "end" and e["index"] == index)


@pytest.fixture
def running(make_settings: Any) -> Iterator[Any]:
    started: list[tuple[threading.Event, threading.Thread]] = []

    def start(tied: bool = False, **overrides: Any) -> Running:
        settings = serve_settings(make_settings, **overrides)
        tokenizer = make_tokenizer(settings.data_dir)
        config = tiny_config(tokenizer.vocab_size, tie_embeddings=tied)
        directory, model = save_checkpoint(settings.data_dir, tokenizer, step=10, config=config)
        service = InferenceService(settings, publish=False)
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop.is_set,), daemon=True)
        thread.start()
        started.append((stop, thread))
        return Running(service, settings, tokenizer, model, directory)

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(30)


def generate(running: Running, **payload: Any) -> Collector:
    collector = Collector()
    running.service.submit({"return_prompt_ids": True, **payload}, collector)
    return collector


def naive_greedy(
    model: Transformer, ids: list[int], steps: int, never: list[int], stops: set[int]
) -> list[int]:
    """Greedy decoding the slow way: a full forward over everything at every step, no cache."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids + out]))[0, -1].clone()
            logits[never] = -float("inf")
            token = int(logits.argmax())
            out.append(token)
            if token in stops:
                break
    return out


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied embeddings"])
def test_greedy_decoding_with_the_kv_cache_equals_decoding_without_it(running: Any, tied: bool) -> None:
    """Also while several requests of different lengths decode together in one batch."""
    run = running(tied=tied)
    texts = ["The city council voted on Tuesday", "川辺市議会は火曜日の夜", "Feed it"]
    prompts = [[run.tokenizer.bos_id, *run.tokenizer.encode(text)] for text in texts]
    collectors = [generate(run, prompts=[text], max_tokens=40, sampling={"temperature": 0}) for text in texts]
    special = run.tokenizer.special_ids
    stops = {run.tokenizer.eos_id, special["<|end|>"]}
    never = [0, run.tokenizer.bos_id, run.tokenizer.pad_id]
    for ids, collector in zip(prompts, collectors, strict=True):
        end = collector.end()
        assert end["generated_ids"] == naive_greedy(run.model, ids, 40, never, stops)
        start = next(e for e in collector.seen if e["event"] == "start")
        assert start["prompt_ids"] == ids  # BOS once, then the text


def test_same_seed_same_text_and_another_seed_another(running: Any) -> None:
    run = running()
    sampling = {"temperature": 1.0, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 11}
    body = dict(prompts=["The river"], max_tokens=24, sampling=sampling)
    first = generate(run, **body).end()["generated_ids"]
    second = generate(run, **body).end()["generated_ids"]
    other = generate(run, **{**body, "sampling": {**sampling, "seed": 12}}).end()["generated_ids"]
    assert first == second and first != other


def test_stop_strings_end_the_text_before_them_and_are_never_streamed(running: Any) -> None:
    run = running()
    body = dict(prompts=["The city"], max_tokens=30, sampling={"temperature": 0, "logit_bias": NO_STOP})
    full = generate(run, **body).end()["text"]
    stop = full[5:8]
    collector = generate(run, **body, stop=[stop])
    end = collector.end()
    assert end["text"] == full[: full.index(stop)] and end["finish_reason"] == "stop"
    streamed = "".join(e["text"] for e in collector.seen if e["event"] == "token")
    assert streamed == end["text"]


def test_a_new_request_joins_the_running_batch_at_the_next_step(running: Any) -> None:
    run = running()
    long = generate(
        run, prompts=["A long answer"], max_tokens=200, sampling={"logit_bias": NO_STOP, "seed": 1}
    )
    for _ in range(5):
        long.until("token")
    short = generate(run, prompts=["short"], max_tokens=3, sampling={"seed": 2})
    short_end = short.end()
    long_end = long.end()
    assert short_end["at"] < long_end["at"]  # it did not wait for the long one to finish
    assert long_end["usage"]["completion_tokens"] == 200


def test_a_cancelled_request_frees_its_slot_at_once(running: Any) -> None:
    run = running(serve_max_batch=1, serve_queue_size=0)
    first = Collector()
    request = run.service.submit(
        {"prompts": ["x"], "max_tokens": 200, "sampling": {"logit_bias": NO_STOP}}, first
    )
    first.until("token")
    with pytest.raises(QueueFull) as full:
        run.service.submit({"prompts": ["y"], "max_tokens": 2}, Collector())
    assert full.value.status == 503 and full.value.retry_after == run.settings.serve_retry_after_sec
    run.service.cancel(request)
    deadline = time.monotonic() + 30
    while run.service.state()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    replacement = generate(run, prompts=["y"], max_tokens=2)
    assert replacement.end()["usage"]["completion_tokens"] >= 1
    assert not any(e["event"] == "end" for e in first.seen)  # the cancelled one just stopped


def test_hot_switch_to_a_newer_checkpoint_while_a_stream_runs(running: Any) -> None:
    run = running()
    streaming = generate(run, prompts=["Before"], max_tokens=240, sampling={"logit_bias": NO_STOP, "seed": 3})
    assert streaming.until("start")["checkpoint"] == run.directory.name
    streaming.until("token")
    newer, _ = save_checkpoint(run.settings.data_dir, run.tokenizer, step=20, seed=5)
    deadline = time.monotonic() + 60
    while True:
        start = generate(run, prompts=["After"], max_tokens=1).until("start")
        if start["checkpoint"] == newer.name or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert start["checkpoint"] == newer.name and start["step"] == 20
    end = streaming.end()  # the old stream finished on the old model, every token of it
    assert end["usage"]["completion_tokens"] == 240
    deadline = time.monotonic() + 30  # and once it is done, the old model is unloaded
    while len(run.service.state()["loaded"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [m["checkpoint"] for m in run.service.state()["loaded"]] == [newer.name]


def test_a_checkpoint_that_fails_to_load_leaves_the_previous_model_serving(running: Any) -> None:
    run = running()
    assert generate(run, prompts=["x"], max_tokens=1).until("start")["checkpoint"] == run.directory.name
    broken, _ = save_checkpoint(run.settings.data_dir, run.tokenizer, step=30, seed=6)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")  # same size, wrong hash
    deadline = time.monotonic() + 60
    while broken.name not in run.service.state()["last_error"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "corrupt" in run.service.state()["last_error"]
    start = generate(run, prompts=["x"], max_tokens=1).until("start")
    assert start["checkpoint"] == run.directory.name


def test_no_model_yet_and_unknown_names_are_clear_errors(make_settings: Any) -> None:
    settings = serve_settings(make_settings)
    service = InferenceService(settings, publish=False)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        collector = Collector()
        service.submit({"prompts": ["x"], "max_tokens": 1}, collector)
        error = collector.until("error")
        assert error["status"] == 503 and "not produced a model" in error["message"]
        make_tokenizer(settings.data_dir)
        save_checkpoint(settings.data_dir, make_tokenizer(settings.data_dir), step=1)
        collector = Collector()
        service.submit({"prompts": ["x"], "max_tokens": 1, "model": "v4"}, collector)
        assert collector.until("error")["status"] == 404
    finally:
        stop.set()
        thread.join(30)


def test_long_prompts_are_cut_from_the_left_and_the_cut_reported(running: Any) -> None:
    run = running()
    text = " ".join(["the city council voted on the plan"] * 80)  # far more than 256 tokens
    end = generate(run, prompts=[text], max_tokens=8, sampling={"logit_bias": NO_STOP}).end()
    usage = end["usage"]
    assert usage["truncated_tokens"] > 0 and usage["prompt_tokens"] + 8 <= 256
    chat = generate(
        run,
        messages=[{"role": "system", "content": "Be kind."}]
        + [{"role": "user", "content": text[:400]}, {"role": "assistant", "content": "ok"}] * 6
        + [{"role": "user", "content": "last question"}],
        max_tokens=8,
    )
    start = chat.until("start")
    assert start["truncated_tokens"] > 0 and start["prompt_tokens"] <= 256 - 8
    ids = start["prompt_ids"]
    special = run.tokenizer.special_ids
    assert ids[:2] == [run.tokenizer.bos_id, special["<|system|>"]]  # the system turn stays
    assert run.tokenizer.decode(ids).endswith("last question")  # and so does the last message


def test_int8_quantization_serves_a_quantized_copy(running: Any) -> None:
    run = running(enable_cpu_quantization=True)
    end = generate(run, prompts=["The council"], max_tokens=5, sampling={"logit_bias": NO_STOP}).end()
    assert end["usage"]["completion_tokens"] == 5
    [model] = run.service.state()["loaded"]
    assert model["quantized"] is True
