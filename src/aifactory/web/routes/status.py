"""Read-only views: status, runtime configuration, health and Prometheus metrics.

Everything here reads small tables (nodes, engine state, counters) or walks an index (the newest
events), so polling the status every second costs the same on day one and on day thirty.
"""

from __future__ import annotations

import time

import psutil
from fastapi import APIRouter, Request, Response

from aifactory import __version__
from aifactory.autotune import cpu_cores, resolve_profile
from aifactory.cluster import engine_state, membership
from aifactory.db import DatabaseError, counters, events
from aifactory.web import serving
from aifactory.web.auth import admin_token_required
from aifactory.web.context import Ctx
from aifactory.web.models import (
    ApiIndex,
    AutoProfile,
    ClusterSummary,
    EngineStatus,
    EventItem,
    Health,
    NodeIdentity,
    NodeInfo,
    NodesResponse,
    RuntimeConfig,
    StatusResponse,
    SystemLoad,
)

router = APIRouter(tags=["status"])
open_router = APIRouter(tags=["status"])  # open by design (web/auth.py OPEN_BY_DESIGN)
GIB = 1024**3


def short_error(text: str) -> str:
    """The one-line reason of an engine's last error. Engines store one line; a traceback stored by an
    older version shows as its last line, the exception itself."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def engine_status(row: dict) -> EngineStatus:
    return EngineStatus(
        node_id=row["node_id"],
        name=row["engine"],
        desired=row["desired"],
        phase=row["phase"],
        detail=row["detail"],
        counters=row["counters"] or {},
        last_error=short_error(row["last_error"]),
        restarts=row["restarts"],
        updated_at=row["updated_at"],
    )


def readable_as_is(operation: dict) -> bool:
    """A GET one can open as it is: no required parameter, and not a stream (the dashboard's events)."""
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    required = any(p.get("required") for p in operation.get("parameters", []))
    return not required and list(content) != ["text/event-stream"]


@router.get("/api", response_model=ApiIndex)
def index(request: Request, ctx: Ctx) -> ApiIndex:
    """This node and where to read from (`/` is the dashboard)."""
    paths = request.app.openapi()["paths"]  # the app's own description of itself, cached by FastAPI
    endpoints = sorted(
        path
        for path, ops in paths.items()
        if "get" in ops and "{" not in path and path != "/" and readable_as_is(ops["get"])
    )
    return ApiIndex(
        name="AI Factory Engine",
        version=__version__,
        node_id=ctx.node.node_id,
        docs="/docs",
        endpoints=endpoints,
    )


@router.get("/api/status", response_model=StatusResponse)
def get_status(ctx: Ctx) -> StatusResponse:
    """Phase of every engine, running counters, this node's identity and the latest events."""
    node_rows = membership.list_nodes(ctx.db, offline_after=ctx.settings.node_offline_window_sec)
    online = {row["node_id"] for row in node_rows if row["online"]}
    engines = [engine_status(row) for row in engine_state.list_states(ctx.db)]
    memory = psutil.virtual_memory()
    return StatusResponse(
        node=NodeIdentity(
            node_id=ctx.node.node_id,
            role=ctx.node.role,
            hostname=next((r["hostname"] for r in node_rows if r["node_id"] == ctx.node.node_id), ""),
            version=__version__,
            uptime_sec=round(time.time() - ctx.started_at, 1),
        ),
        is_running=any(e.desired == "running" and e.node_id in online for e in engines),
        engines=engines,
        counters=counters.get_all(ctx.db),
        cluster=ClusterSummary(
            nodes_total=len(node_rows),
            nodes_online=len(online),
            workers_online=sum(1 for r in node_rows if r["online"] and r["role"] == "worker"),
        ),
        system=SystemLoad(
            cpu_percent=psutil.cpu_percent(interval=None),
            ram_percent=memory.percent,
            cpu_cores=cpu_cores(),
            total_ram_gb=round(memory.total / GIB, 1),
            available_ram_gb=round(memory.available / GIB, 1),
        ),
        events=[EventItem(**row) for row in events.recent(ctx.db, 50)],
    )


@router.get("/api/runtime-config", response_model=RuntimeConfig)
def runtime_config(ctx: Ctx) -> RuntimeConfig:
    """The values in force on this node, including the auto-tune profile (live when realtime is on)."""
    profile = resolve_profile(ctx.settings)
    return RuntimeConfig(
        node_id=ctx.node.node_id,
        system_role=ctx.node.role,
        version=__version__,
        database_backend=ctx.db.backend,
        admin_token_required=admin_token_required(ctx.settings),
        read_token_required=bool(ctx.settings.admin_read_token.get_secret_value()),
        max_generate_tokens=profile.max_generate_tokens,
        use_production_model=ctx.settings.use_production_model,
        auto_tune_realtime=ctx.settings.auto_tune_realtime,
        auto_profile=AutoProfile(**profile.as_dict()),
        db_ui_url=ctx.settings.db_ui_url,
    )


@open_router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(ctx: Ctx, response: Response) -> Health:
    """Liveness for load balancers and scripts: 200 when the database answers, else 503."""
    try:
        ctx.db.check()
    except DatabaseError:
        response.status_code = 503
        return Health(status="degraded", database="unreachable")
    return Health(status="ok", database="ok")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request, ctx: Ctx) -> Response:
    """Prometheus text exposition of counters, engines and nodes."""
    lines = [
        "# HELP aifactory_info Version of this node.",
        "# TYPE aifactory_info gauge",
        f'aifactory_info{{version="{__version__}",node="{_label(ctx.node.node_id)}"}} 1',
        "# HELP aifactory_counter Running counters of the factory (documents, pages, tokens...).",
        "# TYPE aifactory_counter counter",
    ]
    for name, value in counters.get_all(ctx.db).items():
        lines.append(f'aifactory_counter{{name="{_label(name)}"}} {value}')
    lines += [
        "# HELP aifactory_engine_running 1 while an engine is asked to run.",
        "# TYPE aifactory_engine_running gauge",
    ]
    states = engine_state.list_states(ctx.db)
    for row in states:
        labels = f'node="{_label(row["node_id"])}",engine="{_label(row["engine"])}"'
        lines.append(f"aifactory_engine_running{{{labels}}} {int(row['desired'] == 'running')}")
    lines += [
        "# HELP aifactory_engine_counter Counters reported by each engine.",
        "# TYPE aifactory_engine_counter gauge",
    ]
    for row in states:
        for name, value in sorted((row["counters"] or {}).items()):
            labels = f'node="{_label(row["node_id"])}",engine="{_label(row["engine"])}",name="{_label(name)}"'
            lines.append(f"aifactory_engine_counter{{{labels}}} {float(value)}")
    node_rows = membership.list_nodes(ctx.db, offline_after=ctx.settings.node_offline_window_sec)
    lines += [
        "# HELP aifactory_node_online 1 if the node sent a heartbeat recently.",
        "# TYPE aifactory_node_online gauge",
    ]
    for row in node_rows:
        lines.append(
            f'aifactory_node_online{{node="{_label(row["node_id"])}",role="{row["role"]}"}} '
            f"{int(row['online'])}"
        )
    lines += [
        "# HELP aifactory_node_heartbeat_age_seconds Seconds since the node's last heartbeat.",
        "# TYPE aifactory_node_heartbeat_age_seconds gauge",
    ]
    for row in node_rows:
        if row["heartbeat_age"] is not None:
            lines.append(
                f'aifactory_node_heartbeat_age_seconds{{node="{_label(row["node_id"])}",'
                f'role="{row["role"]}"}} {row["heartbeat_age"]:.3f}'
            )
    lines += serving.metrics_of(request.app).render(ctx.settings)  # generation: requests, tokens, latency
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/nodes", response_model=NodesResponse)
def list_nodes(ctx: Ctx) -> NodesResponse:
    """Nodes seen recently, online or not, with their engines."""
    settings = ctx.settings
    states = engine_state.list_states(ctx.db)
    out = []
    for row in membership.list_nodes(
        ctx.db,
        offline_after=settings.node_offline_window_sec,
        list_window_sec=settings.node_list_window_hours * 3600,
    ):
        out.append(
            NodeInfo(
                node_id=row["node_id"],
                role=row["role"],
                hostname=row["hostname"],
                version=row["version"],
                status=row["state"],
                online=row["online"],
                target_status=row["target_status"],
                heartbeat_age_sec=row["heartbeat_age"],
                cpu_percent=row["cpu_percent"],
                ram_percent=row["ram_percent"],
                api_url=row["api_url"],
                is_self=row["node_id"] == ctx.node.node_id,
                engines=[engine_status(s) for s in states if s["node_id"] == row["node_id"]],
            )
        )
    return NodesResponse(nodes=out)
