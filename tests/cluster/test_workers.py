"""Several node processes sharing one PostgreSQL: heartbeats and remote start/stop through the API."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from aifactory.cluster import engine_state, membership
from aifactory.db import Database
from tests.conftest import free_port, wait_for
from tests.processes import start_factory, start_worker, stop

pytestmark = pytest.mark.postgres


def online(db: Database) -> dict[str, dict]:
    return {row["node_id"]: row for row in membership.list_nodes(db, offline_after=2.0) if row["online"]}


def ticker_state(db: Database, node_id: str) -> dict:
    return engine_state.load(db, node_id, "ticker") or {}


def test_master_api_drives_two_worker_processes(pg_url: str, tmp_path: Path) -> None:
    db = Database(pg_url)
    port = free_port()
    common = {
        "DATABASE_URL": pg_url,
        "DATA_DIR": tmp_path / "data",
        "NODE_HEARTBEAT_INTERVAL_SEC": 0.3,
        "NODE_OFFLINE_WINDOW_SEC": 2,
    }
    master = start_factory(port, tmp_path, NODE_ID="m1", ADMIN_API_TOKEN="s3cret", **common)
    workers = {name: start_worker(tmp_path, NODE_ID=name, **common) for name in ("w1", "w2")}
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-admin-token": "s3cret"}, timeout=10)
    try:
        wait_for(lambda: {"m1", "w1", "w2"} <= set(online(db)), timeout=30, what="three nodes online")
        first = online(db)["w1"]["last_heartbeat"]
        wait_for(lambda: online(db)["w1"]["last_heartbeat"] > first, what="a newer heartbeat")

        listed = {n["node_id"]: n for n in api.get("/api/nodes").json()["nodes"]}
        assert listed["w1"]["role"] == "worker" and listed["w1"]["online"]
        assert [e["name"] for e in listed["w2"]["engines"]] == ["ticker"]

        # Remote start of one node: only its engine runs.
        assert api.post("/api/nodes/w1/control", json={"action": "start"}).status_code == 200
        wait_for(lambda: ticker_state(db, "w1").get("phase") == "running", what="w1 ticker running")
        time.sleep(1.0)
        assert ticker_state(db, "w2")["phase"] == "stopped"

        # Ignite everything, then Stop everything.
        assert api.post("/api/control", json={"action": "start"}).json()["nodes"] == 3
        wait_for(lambda: ticker_state(db, "w2").get("phase") == "running", what="w2 ticker running")
        status = api.get("/api/status").json()
        assert status["is_running"] and status["cluster"]["workers_online"] == 2
        assert (
            api.post("/api/nodes/control-all", json={"action": "stop", "role": "worker"}).json()["nodes"] == 2
        )
        wait_for(
            lambda: all(ticker_state(db, w)["phase"] == "stopped" for w in ("w1", "w2")),
            what="both tickers stopped",
        )

        # A clean stop marks the node stopped; a killed node goes stale and shows offline.
        output = stop(workers["w1"], signal.SIGTERM)
        assert workers["w1"].returncode == 0, output
        assert {n["node_id"]: n for n in membership.list_nodes(db, offline_after=2.0)}["w1"][
            "status"
        ] == "stopped"
        stop(workers["w2"], signal.SIGKILL)
        wait_for(lambda: "w2" not in online(db), timeout=10, what="w2 to go offline")
        nodes = {n["node_id"]: n for n in api.get("/api/nodes").json()["nodes"]}
        assert nodes["w2"]["status"] == "offline" and not nodes["w2"]["online"]
    finally:
        api.close()
        for proc in workers.values():
            stop(proc, signal.SIGKILL)
        stop(master)
        db.dispose()
