"""The whole factory in a real browser: Debian's Chromium, driven by Playwright, against `aifactory up`.

The factory's only seed is a local site (tests/web/factory_site.py) and its model the tiny preset, so
in a few minutes it goes from Ignite to a streamed chat answer while the page is watched: no request
leaves the factory's origin, the counters rise live, the admin token's absence is shown, crawled HTML
payloads stay inert text, and the language switch works. A screenshot of each tab is written to
test-output/screenshots/<database>/ (kept in the checkout .ci/run tests) and the path is printed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.collect.harness import TEST_CRAWL
from tests.conftest import free_port
from tests.processes import ROOT, start_factory, stop
from tests.serve.conftest import wait_until_serving
from tests.web.factory_site import IMG, MARKER, SCRIPT, factory_site

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "screenshots"
TOKEN = "dashboard-test-admin-token"
TABS = ("overview", "nodes", "data", "models", "ops", "logs", "chat", "profile")
# A factory small enough to go from an empty database to a served model in about a minute on one core.
TINY_FACTORY: dict[str, Any] = {
    **{key.upper(): ",".join(v) if isinstance(v, list) else v for key, v in TEST_CRAWL.items()},
    "ADMIN_API_TOKEN": TOKEN,
    "ENABLE_WIKIPEDIA_COLLECTOR": "0",
    "ENABLE_RSS_COLLECTOR": "0",
    "ENABLE_NEWS_COLLECTOR": "0",
    "ENABLE_ARXIV_COLLECTOR": "0",
    "ENABLE_DOCS_COLLECTOR": "0",
    "ENABLE_AUTO_DISCOVERY": "0",
    "TRAIN_LANG_ONLY": "en",
    "TRAIN_VOCAB_SIZE": 400,
    "TOKENIZER_MIN_CORPUS_CHARS": 20_000,
    "TOKENIZER_STALL_SEC": 5,
    "SPM_NUM_THREADS": 1,
    "DATASET_BUILD_MIN_NEW_DOCS": 5,
    "DATASET_BUILD_MAX_WAIT_SEC": 2,
    "DATASET_POLL_SEC": 1,
    "DATASET_SHARD_TOKENS": 2000,
    "DATASET_VAL_FRACTION": 0.2,
    "DATASET_BUILD_WORKERS": 1,
    "MODEL_SIZE": "tiny",
    "TRAIN_N_LAYER": 2,
    "TRAIN_N_HEAD": 2,
    "TRAIN_N_EMBD": 64,
    "TRAIN_SEQ_LEN": 512,  # the context: room for a RAG passage in the chat's prompt
    "TRAIN_BATCH_SIZE": 2,
    "RAG_PASSAGE_CHARS": 200,
    "TRAIN_STEPS_PER_CYCLE": 20,
    "TRAIN_WARMUP_STEPS": 5,
    "VAL_EVAL_EVERY": 10,
    "VAL_EVAL_EVERY_MIN": 0,  # by steps: the test is shorter than the default 5-minute clock
    "VAL_EVAL_BATCHES": 2,
    "TRAIN_LOG_EVERY_SEC": 0.5,
    "PYTORCH_CPU_THREADS": 1,
    "MAX_GENERATE_TOKENS": 48,
    "SERVE_MODEL_POLL_SEC": 1,
    "RAG_INDEX_POLL_SEC": 1,
    "DASHBOARD_PUSH_SEC": 0.5,
    "NODE_HEARTBEAT_INTERVAL_SEC": 0.5,
}


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-noto-cjk (DEVELOPERS.md)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def number(page: Page, testid: str) -> float:
    text = page.get_by_test_id(testid).first.text_content() or ""
    digits = "".join(ch for ch in text if ch.isdigit() or ch == ".")
    return float(digits) if digits else 0.0


def wait_until(page: Page, condition: Any, timeout: float, what: str) -> None:
    """Poll a condition on the page (a generous deadline: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def shoot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def tab(page: Page, name: str) -> None:
    page.click(f"#tabs button[data-tab={name}]")
    page.wait_for_timeout(600)  # the panel's first reads


def notice(page: Page) -> str:
    """The text of the page's notice (where admin actions report success or failure), "" if hidden."""
    box = page.get_by_test_id("notice")
    return (box.text_content() or "") if box.is_visible() else ""


@pytest.mark.timeout(420)
def test_from_ignite_to_a_streamed_chat_answer_in_a_browser(
    browser: Browser, db_url: str, tmp_path: Path
) -> None:
    shots = SHOTS / ("postgresql" if db_url.startswith("postgresql") else "sqlite")
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with factory_site() as site:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        factory = start_factory(
            port,
            tmp_path,
            DATABASE_URL=db_url,
            DATA_DIR=tmp_path / "data",
            WEB_SEED_URLS=site.url("/"),
            **TINY_FACTORY,
        )
        try:
            context = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            context.on("request", lambda request: requests.append(request.url))
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(origin + "/")
            page.get_by_test_id("live").filter(has_text="live").wait_for(timeout=20_000)
            assert page.locator("#tabs button[data-tab=overview]").text_content() == "Overview"

            # Without the token, Ignite fails where the user sees it, with the reason.
            page.get_by_test_id("ignite").click()
            wait_until(page, lambda: "401" in notice(page), 10, "the refusal to be shown")
            assert "admin token missing or wrong" in notice(page)

            page.get_by_test_id("token").fill(TOKEN)
            page.click("#token-save")
            page.get_by_test_id("ignite").click()
            wait_until(page, lambda: "start sent" in notice(page), 10, "Ignite to be accepted")

            # Live updates: the stream moves the counters and charts without a reload.
            wait_until(page, lambda: number(page, "corpus-documents") >= 5, 120, "documents in the corpus")
            wait_until(
                page,
                lambda: (page.get_by_test_id("overview-dataset").text_content() or "").startswith("g"),
                150,
                "a dataset version",
            )
            wait_until(page, lambda: number(page, "train-step") >= 10, 150, "training steps")
            chart = page.get_by_test_id("loss-chart")
            wait_until(
                page, lambda: int(chart.get_attribute("data-points") or 0) >= 2, 60, "loss chart points"
            )
            shoot(page, shots, "overview")

            tab(page, "data")
            page.get_by_test_id("datasets-table").wait_for(timeout=10_000)
            assert page.get_by_test_id("datasets-table").locator("tbody tr").count() >= 1
            # The dropped page, by domain and reason, and its explanation rule by rule.
            dropped = page.get_by_test_id("rejections-table")
            assert "/spam" in (dropped.text_content() or "")
            dropped.get_by_role("button", name="Explain").first.click()
            explanation = page.get_by_test_id("explanation")
            explanation.wait_for(timeout=30_000)
            wait_until(page, lambda: "dropped" in (explanation.text_content() or ""), 30, "the explanation")
            form = page.get_by_test_id("policy-form")  # a policy saved from the form (with the token)
            form.locator("input[name=domain_pattern]").fill("riverton.example")
            form.get_by_role("button").click()
            wait_until(
                page, lambda: "policy for riverton.example saved" in notice(page), 15, "the saved policy"
            )
            shoot(page, shots, "data")

            tab(page, "nodes")
            assert page.get_by_test_id("nodes-table").locator("tbody tr").count() == 1
            shoot(page, shots, "nodes")

            tab(page, "logs")
            wait_until(
                page,
                lambda: int(page.get_by_test_id("log-list").get_attribute("data-count") or 0) > 0,
                10,
                "log lines",
            )
            shoot(page, shots, "logs")
            tab(page, "profile")
            shoot(page, shots, "profile")

            # Chat: wait for the served model (its first checkpoint), then ask about the hostile page.
            wait_until_serving(origin, timeout=150)
            tab(page, "chat")
            page.get_by_test_id("chat-input").fill(f"What is the {MARKER} festival?")
            with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as answer:
                page.get_by_test_id("chat-send").click()
            assert answer.value.headers["content-type"].startswith("text/event-stream")
            meta = page.get_by_test_id("chat-meta").last
            wait_until(page, lambda: "tokens/s" in (meta.text_content() or ""), 90, "the streamed answer")
            reply = page.get_by_test_id("msg-assistant").last
            assert (reply.locator(".content").text_content() or "").strip(), "an answer with text"
            # The hostile page is cited as a source: its payloads are shown as characters, not run.
            sources = reply.locator(".sources a")
            assert sources.count() >= 1
            cited = " ".join(sources.all_text_contents())
            assert SCRIPT in cited and IMG in cited, cited
            assert page.evaluate("window.__xss === undefined")
            assert page.locator("#chat-log img, #chat-log script").count() == 0
            shoot(page, shots, "chat")

            # Stop, so that the checkpoint an export or the gate reads is not pruned meanwhile.
            stop_training(page)
            tab(page, "ops")
            page.locator("#tab-ops select[name=target]").select_option("gguf")
            page.locator("#tab-ops form button").click()
            jobs = page.locator("#tab-ops tbody")
            wait_until(page, lambda: "done" in (jobs.text_content() or ""), 180, "the GGUF export")
            with page.expect_download() as download:  # fetched with the token, saved from a blob
                jobs.get_by_role("button", name="Download").click()
            assert Path(download.value.path()).read_bytes()[:4] == b"GGUF"
            shoot(page, shots, "ops")

            tab(page, "models")
            promote_with_force(page)
            shoot(page, shots, "models")

            # The language switch: the UI turns Japanese, and stays so after a reload.
            page.get_by_test_id("lang").select_option("ja")
            assert page.locator("#tabs button[data-tab=overview]").text_content() == "概要"
            page.reload()
            page.get_by_test_id("live").wait_for(timeout=20_000)
            assert page.locator("#tabs button[data-tab=overview]").text_content() == "概要"
            tab(page, "overview")
            shoot(page, shots, "overview-ja")

            assert not errors, errors
            outside = [url for url in requests if not url.startswith((origin + "/", f"blob:{origin}/"))]
            assert requests and not outside, outside
            print(f"\nscreenshots of every tab: {shots}")
        finally:
            stop(factory, timeout=30)


def stop_training(page: Page) -> None:
    page.get_by_test_id("stop").click()
    wait_until(page, lambda: "stop sent" in notice(page), 10, "Stop to be accepted")
    tab(page, "overview")
    trainer = page.get_by_test_id("engine-trainer")
    wait_until(page, lambda: "stopped" in (trainer.text_content() or ""), 60, "the trainer to stop")
    tab(page, "models")


def promote_with_force(page: Page) -> None:
    """The tiny model cannot pass the gate: Promote shows the refusal with its rule and scores, then
    Force (confirmed in the browser's dialog) makes it production, and the overview says which."""
    page.get_by_test_id("promote").click()
    decision = page.get_by_test_id("gate-decision")
    decision.wait_for(timeout=240_000)  # the gate evaluates the candidate first
    assert page.get_by_test_id("gate-promoted").text_content() == "✗", decision.text_content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("force-promote").click()
    wait_until(
        page, lambda: page.get_by_test_id("gate-promoted").text_content() == "✓", 240, "the forced promotion"
    )
    table = page.get_by_test_id("models-table")
    wait_until(page, lambda: "★" in (table.text_content() or ""), 20, "production in the registry")
    tab(page, "overview")
    wait_until(
        page,
        lambda: (page.get_by_test_id("production-version").text_content() or "").startswith("v"),
        30,
        "the production model on the overview",
    )
    tab(page, "models")
