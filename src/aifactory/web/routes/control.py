"""Ignite/Stop and node management. Every call here changes state: the router itself requires the
admin token, so a route added here is protected from the start.

Commands are written to the database; each node (this one included) picks them up on its next
supervisor tick, which is how one dashboard drives a whole cluster.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from aifactory.cluster import commands, engine_state, membership
from aifactory.db import events
from aifactory.web.auth import AdminOnly
from aifactory.web.context import AppContext, Ctx
from aifactory.web.models import (
    CleanupResponse,
    CleanupStaleRequest,
    ControlRequest,
    ControlResponse,
    EngineControlRequest,
    NodeControlAllRequest,
)

router = APIRouter(tags=["control"], dependencies=[AdminOnly])


def _broadcast(ctx: AppContext, action: str, role: str, what: str) -> ControlResponse:
    count = commands.send_command(ctx.db, action, role=role)
    events.record(
        ctx.db,
        f"{what}: {action} sent to {count} node(s) (role={role})",
        source="api",
        node_id=ctx.node.node_id,
    )
    ctx.node.wake()
    return ControlResponse(message=f"{action} sent to {count} node(s)", nodes=count)


@router.post("/api/control", response_model=ControlResponse)
def control(body: ControlRequest, ctx: Ctx) -> ControlResponse:
    """Ignite (start) or Stop every engine on every node."""
    return _broadcast(ctx, body.action, "all", "Ignite" if body.action == "start" else "Stop")


@router.post("/api/nodes/control-all", response_model=ControlResponse)
def control_all(body: NodeControlAllRequest, ctx: Ctx) -> ControlResponse:
    """Start or stop every node of a role."""
    return _broadcast(ctx, body.action, body.role, "control-all")


@router.post("/api/nodes/cleanup-stale", response_model=CleanupResponse)
def cleanup_stale(body: CleanupStaleRequest, ctx: Ctx) -> CleanupResponse:
    """Forget nodes that have sent no heartbeat for `older_than_sec` seconds."""
    ids = membership.delete_stale(ctx.db, older_than=body.older_than_sec, role=body.role)
    if ids:
        events.record(
            ctx.db, f"removed stale nodes: {', '.join(ids)}", source="api", node_id=ctx.node.node_id
        )
    return CleanupResponse(deleted=len(ids), node_ids=ids)


@router.post("/api/nodes/{node_id}/control", response_model=ControlResponse)
def control_node(node_id: str, body: ControlRequest, ctx: Ctx) -> ControlResponse:
    """Start or stop all engines of one node."""
    if commands.send_command(ctx.db, body.action, node_id=node_id) == 0:
        raise HTTPException(status_code=404, detail=f"unknown node {node_id!r}")
    events.record(ctx.db, f"{body.action} sent to node {node_id}", source="api", node_id=ctx.node.node_id)
    ctx.node.wake()
    return ControlResponse(message=f"{body.action} sent to node {node_id}", nodes=1)


@router.post("/api/engines/{engine}/control", response_model=ControlResponse)
def control_engine(engine: str, body: EngineControlRequest, ctx: Ctx) -> ControlResponse:
    """Start or stop one engine of one node (default: this node)."""
    node_id = body.node_id or ctx.node.node_id
    desired = "running" if body.action == "start" else "stopped"
    if engine_state.set_desired(ctx.db, node_id, desired, engine=engine) == 0:
        raise HTTPException(status_code=404, detail=f"node {node_id!r} has no engine {engine!r}")
    events.record(
        ctx.db, f"engine {engine} on {node_id}: {body.action}", source="api", node_id=ctx.node.node_id
    )
    ctx.node.wake()
    return ControlResponse(message=f"engine {engine} on {node_id}: {body.action}", nodes=1)
