"""Done when: a factory with conversation files answers in the chat template over the APIs. Ingested
conversations, the trainer with them in its mix, the checkpoint served by the inference engine in its
own process: a held-out question gets an answer that ends its turn (finish_reason "stop") over the
OpenAI API and the Ollama API (the documents-only model never does: tests/chat/test_tuning.py)."""

from __future__ import annotations

from pathlib import Path

import httpx

from aifactory.chat import store
from aifactory.cluster.node import Node
from aifactory.cluster.registry import available_engines
from aifactory.dataset.builder import build
from aifactory.db import Database, migrate
from aifactory.settings import Settings
from aifactory.train.foreground import train_command
from aifactory.web.app import create_app
from aifactory.web.context import AppContext
from tests.chat.helpers import add_conversations, conversation_set
from tests.chat.test_tuning import CHAT_TINY, RATIO, STEPS
from tests.dataset.helpers import add_documents, trained_tokenizer
from tests.serve.conftest import SERVE, WebServer, wait_until_serving


def ask(url: str, question: str) -> tuple[str, str, str]:
    """(OpenAI finish_reason, its answer, Ollama done_reason) for one question."""
    messages = [{"role": "user", "content": question}]
    with httpx.Client(base_url=url, timeout=120) as client:
        openai = client.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 40, "temperature": 0}
        ).json()
        ollama = client.post(
            "/ollama/api/chat",
            json={
                "model": "aifactory",
                "messages": messages,
                "stream": False,
                "options": {"num_predict": 40, "temperature": 0},
            },
        ).json()
    choice = openai["choices"][0]
    return choice["finish_reason"], choice["message"]["content"], ollama["done_reason"]


def serve(settings: Settings, db: Database) -> tuple[Node, WebServer]:
    specs = [spec for spec in available_engines() if spec.name == "inference"]
    node = Node(settings, db, specs, role="master", node_id="chat-node")
    node.start()
    web = WebServer(create_app(AppContext(settings, db, node)))
    wait_until_serving(web.url)
    return node, web


def test_the_served_model_answers_in_the_chat_template(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        auto_tune=False,
        node_heartbeat_interval_sec=0.2,
        node_offline_window_sec=5,
        **{
            **SERVE,
            **CHAT_TINY,
            "chat_mix_ratio": RATIO,
            "train_steps_per_cycle": 100,
            "val_eval_every": 100,
        },
    )
    db = Database(settings.resolved_database_url())
    migrate.upgrade(db)
    add_documents(db, range(120))
    trained_tokenizer(settings, db)
    build(settings, db)
    add_conversations(db, conversation_set(240))
    held_out = [c.messages[0]["content"] for c in store.load(db, split=store.VAL)][:4]
    assert train_command(settings, steps=STEPS, text_file=None, out=None) == 0
    node, web = serve(settings, db)
    try:
        answers = [ask(web.url, question) for question in held_out]
    finally:
        web.stop()
        node.stop(timeout=20)
        db.dispose()
    assert all(openai == "stop" and ollama == "stop" for openai, _, ollama in answers), answers
    assert all(text.strip() and "<|" not in text for _, text, _ in answers), answers
