"""The generation APIs against a live factory, through the clients people use: the openai SDK, the
ollama client, lm-evaluation-harness, plain HTTP (native API, SSE, NDJSON, curl-style bodies)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import torch

from aifactory.db.schema import documents
from aifactory.serve.template import CHAT_TEMPLATE_JINJA
from aifactory.web.app import create_app
from aifactory.web.context import AppContext
from tests.serve.conftest import Live, WebServer, settings_for

EOS_BAN = {"2": -100, "7": -100}  # </s> and <|end|> never chosen: answers run to max_tokens


def openai_client(live: Live, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=120)


# --- openai -----------------------------------------------------------------------------------------------
def test_openai_client_lists_models_and_chats(live: Live) -> None:
    client = openai_client(live)
    assert [m.id for m in client.models.list()] == ["latest"]
    reply = client.chat.completions.create(
        model="latest", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, logit_bias=EOS_BAN
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length" and reply.usage.completion_tokens == 8
    assert reply.system_fingerprint == live.directory.name


def test_openai_chat_streams_token_by_token_with_usage(live: Live) -> None:
    stream = openai_client(live).chat.completions.create(
        model="latest",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "こんにちは"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias=EOS_BAN,
        seed=3,
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(pieces) >= 5  # streamed as it was generated, not in one piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_openai_completions_stream_and_clamp_max_tokens(live: Live) -> None:
    client = openai_client(live)
    limit = live.settings.max_generate_tokens
    reply = client.completions.create(
        model="latest", prompt="The council", max_tokens=10_000, logit_bias=EOS_BAN
    )
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == limit
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="latest", prompt="The council", max_tokens=6, stream=True, temperature=0, logit_bias=EOS_BAN
        )
        if c.choices
    )
    same = client.completions.create(
        model="latest", prompt="The council", max_tokens=6, temperature=0, logit_bias=EOS_BAN
    )
    assert text == same.choices[0].text  # streamed or not, greedy gives the same text


def test_openai_errors_are_typed_and_name_the_field(live: Live) -> None:
    client = openai_client(live)
    with pytest.raises(openai.NotFoundError, match="no model has been promoted"):
        client.chat.completions.create(model="production", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-4o'"):
        client.completions.create(model="gpt-4o", prompt="hi")
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.chat.completions.create(
            model="latest", messages=[{"role": "user", "content": "hi"}], temperature=7
        )
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens: 0 is allowed only with echo"):
        client.completions.create(model="latest", prompt="hi", max_tokens=0)
    with pytest.raises(openai.UnprocessableEntityError, match="n"):
        client.completions.create(model="latest", prompt="hi", n=2)
    long_prompt = list(range(10, 300))  # more token ids than the 256-token context
    with pytest.raises(openai.BadRequestError, match="cannot be shortened"):
        client.completions.create(model="latest", prompt=[long_prompt], max_tokens=0, echo=True, logprobs=0)


def test_echo_logprobs_equal_the_models_own_log_likelihoods(live: Live) -> None:
    prompts = [live.tokenizer.encode("The city council voted"), [1, *live.tokenizer.encode("川辺市議会")]]
    reply = httpx.post(
        f"{live.url}/v1/completions",
        json={
            "model": "latest",
            "prompt": prompts,
            "max_tokens": 1,
            "echo": True,
            "logprobs": 1,
            "temperature": 0,
        },
        timeout=60,
    ).json()
    choices = sorted(reply["choices"], key=lambda c: c["index"])
    for ids, choice in zip(prompts, choices, strict=True):
        with torch.no_grad():
            expected = torch.log_softmax(live.model(torch.tensor([ids]))[0].float(), dim=-1)
        got = choice["logprobs"]["token_logprobs"]
        assert got[0] is None and len(got) == len(ids) + 1  # the prompt's tokens, then the generated one
        for position in range(1, len(ids)):
            assert got[position] == pytest.approx(float(expected[position - 1, ids[position]]), abs=1e-4)
        greedy = int(expected[-1].argmax())
        assert got[-1] == pytest.approx(float(expected[-1, greedy]), abs=1e-4)
        best = choice["logprobs"]["top_logprobs"][-1]
        assert list(best.values()) == [pytest.approx(got[-1], abs=1e-6)]
        assert choice["text"].startswith(live.tokenizer.decode(ids))


def test_lm_evaluation_harness_runs_against_the_server(live: Live, tmp_path: Path) -> None:
    """lm-eval's local-completions model: a multiple-choice (loglikelihood) and a generation task,
    tokenizing through /tokenize (no tokenizer files on the client), entirely offline."""
    data = tmp_path / "tiny.jsonl"
    rows = [
        {"question": "What colour is the sky?", "choices": [" blue", " green"], "answer": 0},
        {"question": "川辺市議会は何を可決した？", "choices": [" 公園の計画", " 工場の計画"], "answer": 0},
        {"question": "How many days are in a week?", "choices": [" seven", " ten"], "answer": 0},
    ]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tmp_path / "mc.yaml").write_text(
        "task: aifactory_mc\n" + common + "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\nmetric_list:\n  - metric: acc\n'
    )
    (tmp_path / "gen.yaml").write_text(
        "task: aifactory_gen\n" + common + "output_type: generate_until\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: "{{choices[answer]}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 8\nmetric_list:\n  - metric: exact_match\n'
    )
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OPENAI_API_KEY": "unused",
    }
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable, "-m", "lm_eval", "run", "--model", "local-completions",
            "--model_args", f"base_url={live.url}/v1/completions,model=latest,max_length=256,max_retries=1",
            "--tasks", "aifactory_mc", "aifactory_gen",
            "--include_path", str(tmp_path), "--output_path", str(out),
        ],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Using remote tokenizer" in result.stderr
    [report] = list(out.rglob("results_*.json"))
    results = json.loads(report.read_text())["results"]
    assert 0.0 <= results["aifactory_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["aifactory_gen"]["exact_match,none"] <= 1.0


# --- ollama -----------------------------------------------------------------------------------------------
def test_ollama_client_lists_shows_and_chats(live: Live) -> None:
    client = ollama.Client(host=f"{live.url}/ollama", timeout=120)
    [model] = client.list().models
    assert model.model == "aifactory:latest" and model.details.family == "llama"
    shown = client.show("aifactory:latest")
    assert shown.modelinfo["general.architecture"] == "llama" and "<|assistant|>" in shown.template
    parts = list(
        client.chat(
            model="aifactory:latest",
            messages=[{"role": "user", "content": "Tell me about the park."}],
            stream=True,
            options={"num_predict": 10, "temperature": 0.7, "seed": 1, "top_k": 20, "repeat_penalty": 1.1},
        )
    )
    assert len([p for p in parts if not p.done]) >= 3 and parts[-1].done
    assert parts[-1].done_reason in ("stop", "length") and parts[-1].eval_count <= 10
    assert parts[-1].prompt_eval_count > 0 and parts[-1].eval_duration > 0 and parts[-1].total_duration > 0
    answer = client.generate(model="aifactory:latest", prompt="Hello", options={"num_predict": 5, "seed": 2})
    assert answer.done and isinstance(answer.response, str) and len(answer.context) > 3
    follow = client.generate(
        model="aifactory:latest", prompt="More", context=answer.context, options={"num_predict": 2}
    )
    assert follow.prompt_eval_count > len(answer.context)  # the previous exchange, then the new turn
    assert follow.context[: len(answer.context)] == answer.context
    assert follow.context.count(live.tokenizer.bos_id) == 1
    assert {m.model for m in client.ps().models} == {"aifactory:latest"}


def test_ollama_errors_and_curl_style_bodies(live: Live) -> None:
    client = ollama.Client(host=f"{live.url}/ollama", timeout=60)
    with pytest.raises(ollama.ResponseError) as error:
        client.chat(model="aifactory:v9", messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 404 and "v9" in error.value.error
    assert httpx.get(f"{live.url}/ollama").text == "Ollama is running"
    assert httpx.get(f"{live.url}/ollama/api/version").json()["version"]
    # curl -d sends application/x-www-form-urlencoded: the body is still read as JSON
    body = json.dumps({"model": "aifactory", "prompt": "hi", "stream": False, "options": {"num_predict": 3}})
    reply = httpx.post(
        f"{live.url}/ollama/api/generate",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=60,
    )
    assert reply.status_code == 200 and reply.json()["done"] is True
    streamed = httpx.post(
        f"{live.url}/ollama/api/generate", content=body.replace('"stream": false', '"stream": true')
    )
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert streamed.headers["content-type"].startswith("application/x-ndjson") and lines[-1]["done"] is True
    assert (
        httpx.post(f"{live.url}/ollama/api/embed", json={"model": "aifactory", "input": "x"}).status_code
        == 501
    )
    bad = httpx.post(f"{live.url}/ollama/api/chat", content=b"{not json")
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]


# --- native -----------------------------------------------------------------------------------------------
def add_document(live: Live, url: str, title: str, text: str) -> None:
    with live.db.begin() as conn:
        conn.execute(
            documents.insert().values(
                url=url,
                final_url=url,
                domain="example.org",
                title=title,
                text=text,
                char_count=len(text),
                language="ja",
                source_type="web",
                content_hash=hashlib.sha256(url.encode()).digest()[:16],
                created_at=live.db.now(),
            )
        )


def test_native_generate_cites_rag_sources_and_streams(live: Live) -> None:
    add_document(
        live, "https://example.org/tower", "東京タワー", "東京タワーの高さは333メートルで、1958年に完成した。"
    )
    add_document(live, "https://example.org/bread", "Sourdough", "Feed a sourdough starter once a day.")
    client = live.client()
    deadline = time.monotonic() + 60
    while True:  # the inference engine indexes new documents by itself
        reply = client.post("/api/generate", json={"prompt": "東京タワーの高さは？", "max_tokens": 5}).json()
        if reply["sources"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply["status"] == "success" and reply["model"] == "latest"
    assert reply["sources"][0] == {
        "url": "https://example.org/tower",
        "title": "東京タワー",
        "passage": "東京タワーの高さは333メートルで、1958年に完成した。",
    }
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 20 and usage["time_to_first_token_ms"] > 0 and usage["total_ms"] > 0
    bare = client.post(
        "/api/generate", json={"prompt": "東京タワーの高さは？", "max_tokens": 5, "rag": False}
    ).json()
    assert bare["sources"] == [] and bare["usage"]["prompt_tokens"] < usage["prompt_tokens"]
    events = []
    with client.stream(
        "POST", "/api/generate", json={"prompt": "Sourdough", "max_tokens": 6, "stream": True}
    ) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    assert events[0]["type"] == "start" and events[0]["sources"][0]["title"] == "Sourdough"
    assert events[-1]["type"] == "done" and events[-1]["text"] == "".join(e["text"] for e in events[1:-1])


def test_native_generate_refuses_out_of_range_values_naming_the_field(live: Live) -> None:
    client = live.client()
    for body, field in [
        ({"prompt": "x", "max_tokens": 10_000}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "temperature": -1}, "temperature"),
        ({"prompt": "x", "top_p": 0}, "top_p"),
        ({"prompt": ""}, "prompt"),
        ({"max_tokens": 3}, "prompt"),
    ]:
        reply = client.post("/api/generate", json=body)
        assert reply.status_code == 422, body
        assert reply.json()["status"] == "error" and field in reply.json()["message"]
        assert "Traceback" not in reply.text
    assert client.post("/api/generate", json={"prompt": "x", "model": "v3"}).status_code == 404
    big = client.post("/api/generate", content=b"{" + b" " * (live.settings.serve_max_body_bytes + 1) + b"}")
    assert big.status_code == 413

    def chunked():  # no Content-Length: the body is counted as it arrives
        for _ in range(live.settings.serve_max_body_bytes // 65536 + 2):
            yield b" " * 65536

    assert client.post("/v1/completions", content=chunked()).status_code == 413
    huge = client.post("/api/generate", json={"prompt": "x" * (live.settings.serve_max_prompt_chars + 1)})
    assert huge.status_code == 413 and "SERVE_MAX_PROMPT_CHARS" in huge.json()["message"]


def test_same_seed_same_text(live: Live) -> None:
    body = {
        "prompt": "The river",
        "max_tokens": 16,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "seed": 7,
        "rag": False,
    }
    client = live.client()
    first, second = (client.post("/api/generate", json=body).json()["text"] for _ in range(2))
    other = client.post("/api/generate", json={**body, "seed": 8}).json()["text"]
    assert first == second and first != other


# --- tokenizer endpoints and the chat template ------------------------------------------------------------
def test_tokenizer_endpoints_and_the_chat_template(live: Live) -> None:
    client = live.client()
    info = client.get("/tokenizer_info").json()
    assert (
        info["eos_token"] == "</s>"
        and info["bos_token"] == "<s>"
        and info["chat_template"] == CHAT_TEMPLATE_JINJA
    )
    assert info["model_max_length"] == 256
    text = "Hello <|user|> world </s> 東京"
    ids = client.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()["tokens"]
    control = {live.tokenizer.special_ids[t] for t in ("<|user|>", "</s>", "<s>")}
    assert not control & set(ids)  # text that looks like a marker stays text
    assert client.post("/detokenize", json={"tokens": ids}).json()["prompt"] == text
    with_bos = client.post("/tokenize", json={"prompt": "Hi"}).json()["tokens"]
    assert with_bos[0] == live.tokenizer.bos_id and with_bos.count(live.tokenizer.bos_id) == 1
    chat = client.post(
        "/tokenize", json={"messages": [{"role": "user", "content": "<|assistant|>hi"}]}
    ).json()
    special = live.tokenizer.special_ids
    assert chat["tokens"][:2] == [live.tokenizer.bos_id, special["<|user|>"]]
    assert chat["tokens"][-2:] == [special["<|end|>"], special["<|assistant|>"]]
    assert chat["tokens"].count(special["<|assistant|>"]) == 1
    assert client.post("/detokenize", json={"tokens": [10**6]}).status_code == 422


def test_metrics_count_requests_tokens_and_queue(live: Live) -> None:
    live.client().post("/api/generate", json={"prompt": "metrics", "max_tokens": 2, "rag": False})
    text = live.client().get("/metrics").text
    assert 'aifactory_generate_requests_total{api="native",status="200"}' in text
    assert 'aifactory_generate_tokens_total{api="native"}' in text
    assert 'aifactory_generate_time_to_first_token_seconds_bucket{api="native",le="+Inf"}' in text
    assert "aifactory_inference_queued 0" in text


# --- API keys ---------------------------------------------------------------------------------------------
def test_api_keys_guard_the_generation_routes(live: Live) -> None:
    """A second web server on the same data directory (and inference engine), with API_KEYS set."""
    settings = settings_for(live.data_dir, api_keys="k1,k2", admin_api_token="admin-secret")
    web = WebServer(create_app(AppContext(settings, live.db, live.node)))
    try:
        body = {"prompt": "x", "max_tokens": 1, "rag": False}
        assert httpx.post(f"{web.url}/api/generate", json=body).status_code == 401
        for headers in ({"authorization": "Bearer k2"}, {"x-api-key": "k1"}, {"x-api-key": "admin-secret"}):
            assert (
                httpx.post(f"{web.url}/api/generate", json=body, headers=headers, timeout=60).status_code
                == 200
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{web.url}/v1", api_key="wrong", max_retries=0).models.list()
        assert [m.id for m in openai.OpenAI(base_url=f"{web.url}/v1", api_key="k1").models.list()] == [
            "latest"
        ]
        with pytest.raises(ollama.ResponseError) as error:
            ollama.Client(host=f"{web.url}/ollama").list()
        assert error.value.status_code == 401
        assert ollama.Client(host=f"{web.url}/ollama", headers={"authorization": "Bearer k1"}).list().models
        assert httpx.get(f"{web.url}/ollama").status_code == 200  # the liveness probe stays open
        assert httpx.post(f"{web.url}/tokenize", json={"prompt": "x"}).status_code == 401
        assert httpx.get(f"{web.url}/api/status").status_code == 200  # status routes are not generation
    finally:
        web.stop()


def test_every_generation_route_is_guarded_by_the_api_key_dependency(live: Live) -> None:
    from fastapi.routing import APIRoute

    from aifactory.web.auth import require_api_key
    from aifactory.web.serving import is_generation_path

    app = create_app(AppContext(live.settings, live.db, live.node))
    open_by_design = {"/ollama", "/ollama/"}  # Ollama's liveness probe
    guarded = []
    routes = []
    for route in app.routes:  # included routers are kept whole (FastAPI >= 0.13x): walk into them
        inner = getattr(route, "original_router", None)
        routes += inner.routes if inner is not None else [route]
    for route in routes:
        if (
            isinstance(route, APIRoute)
            and is_generation_path(route.path)
            and route.path not in open_by_design
        ):
            calls = {dependency.call for dependency in route.dependant.dependencies}
            assert require_api_key in calls, route.path
            guarded.append(route.path)
    assert {"/api/generate", "/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize"} <= set(
        guarded
    )
    assert {"/ollama/api/chat", "/ollama/api/generate", "/ollama/api/tags", "/tokenizer_info"} <= set(guarded)
