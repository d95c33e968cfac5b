"""The base API through a real uvicorn server on a free port, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from aifactory.cluster import engine_state, membership
from aifactory.db import Database, counters
from tests.conftest import wait_for


def test_status_shows_node_engines_counters_and_events(db: Database, serve) -> None:
    client, _ = serve()
    counters.add(db, {"docs.web": 3})
    body = client.get("/api/status").json()
    assert body["node"]["node_id"] == "api-node" and body["node"]["role"] == "master"
    assert [(e["name"], e["desired"]) for e in body["engines"]] == [("ticker", "stopped")]
    assert body["counters"] == {"docs.web": 3}
    assert body["cluster"] == {"nodes_total": 1, "nodes_online": 1, "workers_online": 0}
    assert body["is_running"] is False
    assert any("api-node (master) started" in e["message"] for e in body["events"])
    assert body["system"]["cpu_cores"] >= 1


def test_the_root_address_is_the_dashboard_and_api_says_where_to_read(serve) -> None:
    client, _ = serve()
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html") and "<html" in page.text
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    body = client.get("/api").json()
    assert body["name"] == "AI Factory Engine" and body["node_id"] == "api-node"
    assert {"/api/status", "/api/runtime-config", "/healthz", "/metrics"} <= set(body["endpoints"])
    needs_model = {"/tokenizer_info"}  # 503 "no model yet" until training has written a checkpoint
    for path in body["endpoints"]:
        assert client.get(path).status_code == (503 if path in needs_model else 200), path


def test_ignite_and_stop_through_the_api(db: Database, serve) -> None:
    client, _ = serve()
    reply = client.post("/api/control", json={"action": "start"})
    assert reply.status_code == 200 and reply.json()["nodes"] == 1
    wait_for(lambda: client.get("/api/status").json()["engines"][0]["phase"] == "running", what="running")
    assert client.get("/api/status").json()["is_running"] is True
    client.post("/api/control", json={"action": "stop"})
    wait_for(lambda: client.get("/api/status").json()["engines"][0]["phase"] == "stopped", what="stopped")


def test_bad_action_is_422_with_the_accepted_values(serve) -> None:
    client, _ = serve()
    reply = client.post("/api/control", json={"action": "explode"})
    assert reply.status_code == 422
    assert "'start' or 'stop'" in reply.text
    assert client.post("/api/control", json={}).status_code == 422
    assert client.post("/api/nodes/cleanup-stale", json={"older_than_sec": 5}).status_code == 422


def test_unknown_node_and_engine_are_404(serve) -> None:
    client, _ = serve()
    reply = client.post("/api/nodes/nobody/control", json={"action": "start"})
    assert reply.status_code == 404 and "nobody" in reply.json()["detail"]
    assert client.post("/api/engines/nope/control", json={"action": "start"}).status_code == 404


def test_one_engine_and_one_node_can_be_controlled(db: Database, serve) -> None:
    client, _ = serve()
    assert client.post("/api/engines/ticker/control", json={"action": "start"}).status_code == 200
    wait_for(
        lambda: (engine_state.load(db, "api-node", "ticker") or {}).get("phase") == "running", what="run"
    )
    assert client.post("/api/nodes/api-node/control", json={"action": "stop"}).status_code == 200
    wait_for(
        lambda: (engine_state.load(db, "api-node", "ticker") or {}).get("phase") == "stopped", what="stop"
    )


def test_nodes_list_and_cleanup_of_stale_nodes(db: Database, serve) -> None:
    client, _ = serve()
    membership.register(
        db,
        node_id="ghost",
        role="worker",
        hostname="old-laptop",
        pid=1,
        instance_id="x",
        version="0",
        api_url="",
        alive_window=1,
    )
    with db.begin() as conn:  # its last heartbeat was two hours ago
        conn.execute(
            membership.nodes.update()
            .where(membership.nodes.c.node_id == "ghost")
            .values(last_heartbeat=db.now() - 7200)
        )
    nodes = {n["node_id"]: n for n in client.get("/api/nodes").json()["nodes"]}
    assert nodes["api-node"]["online"] and nodes["api-node"]["is_self"]
    assert "ghost" not in nodes  # older than NODE_LIST_WINDOW_HOURS
    reply = client.post("/api/nodes/cleanup-stale", json={"older_than_sec": 600}).json()
    assert reply == {"status": "ok", "deleted": 1, "node_ids": ["ghost"]}
    assert not membership.exists(db, "ghost") and membership.exists(db, "api-node")


def test_runtime_config_shows_the_auto_tune_profile(serve) -> None:
    client, _ = serve(auto_tune=True, train_batch_size=3)
    body = client.get("/api/runtime-config").json()
    profile = body["auto_profile"]
    assert profile["auto_tune"] is True and profile["train_batch_size"] == 3  # explicit wins
    assert "train_batch_size" not in profile["auto_chosen"] and "model_size" in profile["auto_chosen"]
    assert profile["device"] in ("cpu", "cuda", "mps") and profile["cpu_cores"] >= 1
    assert body["database_backend"] in ("sqlite", "postgresql")


def test_healthz_and_prometheus_metrics(db: Database, serve) -> None:
    client, _ = serve()
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    counters.add(db, {'pages "fetched"': 7})
    text = client.get("/metrics").text
    assert 'aifactory_counter{name="pages \\"fetched\\""} 7' in text
    assert 'aifactory_engine_running{node="api-node",engine="ticker"} 0' in text
    assert 'aifactory_node_online{node="api-node",role="master"} 1' in text
    # every sample line belongs to a family declared by a TYPE line just before its group
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    samples = [
        line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")
    ]
    histograms = [
        line.split()[2] for line in text.splitlines() if line.startswith("# TYPE") and "histogram" in line
    ]
    suffixes = ("_bucket", "_sum", "_count")  # a histogram's samples carry these after its name
    assert all(
        name in families or any(name == h + suffix for h in histograms for suffix in suffixes)
        for name in samples
    )
    assert len(families) == len(set(families))


def test_openapi_schema_has_typed_models(serve) -> None:
    client, _ = serve()
    schema = client.get("/openapi.json").json()
    status = schema["paths"]["/api/status"]["get"]["responses"]["200"]["content"]["application/json"]
    assert status["schema"]["$ref"].endswith("/StatusResponse")
    control = schema["paths"]["/api/control"]["post"]
    assert control["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ControlRequest")
    assert schema["components"]["schemas"]["ControlRequest"]["properties"]["action"]["enum"] == [
        "start",
        "stop",
    ]


def test_status_returns_the_newest_fifty_events(db: Database, serve) -> None:
    """The status walks the events index from the newest; a long log gives the same 50 newest."""
    client, _ = serve()
    from aifactory.db.schema import events as events_table

    with db.begin() as conn:
        conn.execute(
            events_table.insert(),
            [
                {"ts": time.time(), "node_id": "x", "level": "info", "source": "t", "message": f"e{i}"}
                for i in range(3000)
            ],
        )
    body = client.get("/api/status").json()
    assert len(body["events"]) == 50 and body["events"][0]["message"] == "e2999"
