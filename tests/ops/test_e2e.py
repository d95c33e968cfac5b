"""ops/e2e_pipeline.sh against a live factory: `aifactory up` on a local site, tiny model, every step."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from aiohttp import web

from tests.collect.sites import Handler, SiteServer
from tests.conftest import free_port
from tests.processes import ROOT, start_factory, stop
from tests.text import pages

ARTICLES = 40
TOKEN = "e2e-admin-token-0123456789"

# A tiny model, a small vocabulary and a dataset engine that builds at once: the pipeline in a minute.
FAST_FACTORY = {
    "ADMIN_API_TOKEN": TOKEN,
    "CRAWLER_PRIVATE_ALLOWLIST": "127.0.0.0/8",
    "CRAWLER_DOMAIN_MIN_INTERVAL_SEC": 0,
    "CRAWLER_BATCH_SLEEP_SEC": 0,
    "CRAWLER_CONTACT_URL": "https://example.invalid/crawler",
    "MAX_CRAWLER_WORKERS": 2,
    "TRAIN_LANG_ONLY": "en",
    "TRAIN_VOCAB_SIZE": 600,
    "TOKENIZER_MIN_CORPUS_CHARS": 10_000,
    "SPM_NUM_THREADS": 1,
    "DATASET_BUILD_MIN_NEW_DOCS": 1,
    "DATASET_BUILD_MAX_WAIT_SEC": 0,
    "DATASET_POLL_SEC": 0.5,
    "DATASET_BUILD_WORKERS": 1,
    "DATASET_VAL_FRACTION": 0.2,
    "MODEL_SIZE": "tiny",
    "TRAIN_N_LAYER": 2,
    "TRAIN_N_HEAD": 4,
    "TRAIN_N_KV_HEAD": 2,
    "TRAIN_N_EMBD": 32,
    "TRAIN_BATCH_SIZE": 4,
    "TRAIN_SEQ_LEN": 32,
    "TRAIN_STEPS_PER_CYCLE": 5,
    "VAL_EVAL_EVERY": 5,
    "VAL_EVAL_EVERY_MIN": 0,  # by steps: the test is shorter than the default 5-minute clock
    "VAL_EVAL_BATCHES": 2,
    "PYTORCH_CPU_THREADS": 1,
    "NODE_HEARTBEAT_INTERVAL_SEC": 0.5,
}


def article(number: int) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        text = pages.page(f"Article {number}", pages.varied_text(5, seed=number).split("\n\n"))
        return web.Response(text=text, content_type="text/html")

    return handler


def site() -> SiteServer:
    links = "".join(f'<p><a href="/a/{n}">article {n}</a></p>' for n in range(ARTICLES))

    async def home(_request: web.Request) -> web.StreamResponse:
        body = pages.page("Index", [pages.varied_text(2, seed=999)], extra_body=links)
        return web.Response(text=body, content_type="text/html")

    async def robots(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="User-agent: *\nAllow: /\n", content_type="text/plain")

    routes: dict[str, Handler] = {"/": home, "/robots.txt": robots}
    routes.update({f"/a/{n}": article(n) for n in range(ARTICLES)})
    return SiteServer(routes=routes)


def test_the_end_to_end_script_passes_against_a_live_factory(tmp_path: Path) -> None:
    port = free_port()
    with site() as fixture:
        factory = start_factory(port, tmp_path, WEB_SEED_URLS=fixture.url("/"), **FAST_FACTORY)
        try:
            run = subprocess.run(
                [str(ROOT / "ops" / "e2e_pipeline.sh")],
                env={
                    **os.environ,
                    "BASE_URL": f"http://127.0.0.1:{port}",
                    "ADMIN_API_TOKEN": TOKEN,
                    "E2E_TIMEOUT_SEC": "240",
                },
                capture_output=True,
                text=True,
                timeout=900,
            )
        finally:
            log = stop(factory, timeout=60)
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"{report}\n--- factory log (tail) ---\n{log[-4000:]}"
    for name in ("health", "Ignite", "corpus grows", "dataset version", "training steps", "Stop"):
        assert f"  {name} " in report and "FAIL" not in report
    assert "generate (native API)" in report and "completions (OpenAI API)" in report
    assert "generate (Ollama API)" in report and report.rstrip().splitlines()[-1].startswith("all ")
