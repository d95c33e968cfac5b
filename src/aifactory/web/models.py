"""Request and response models of the base API (they make the OpenAPI schema accurate)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Action = Literal["start", "stop"]
RoleFilter = Literal["all", "master", "worker"]


class ControlRequest(BaseModel):
    action: Action = Field(description="start = Ignite, stop = Stop.")


class NodeControlAllRequest(ControlRequest):
    role: RoleFilter = Field("all", description="Which nodes get the command.")


class EngineControlRequest(ControlRequest):
    node_id: str | None = Field(None, description="Node whose engine to control; default: this node.")


class CleanupStaleRequest(BaseModel):
    older_than_sec: int = Field(600, ge=60, le=86400, description="Forget nodes silent for this long.")
    role: RoleFilter = "all"


class ControlResponse(BaseModel):
    status: Literal["ok"] = "ok"
    message: str
    nodes: int = Field(0, description="How many nodes received the command.")


class CleanupResponse(BaseModel):
    status: Literal["ok"] = "ok"
    deleted: int
    node_ids: list[str]


class EngineStatus(BaseModel):
    node_id: str
    name: str
    desired: str = Field(description="running or stopped: what was asked (kept across restarts).")
    phase: str = Field(description="What the engine reports: running, stopping, stopped, error, ...")
    detail: str
    counters: dict[str, float]
    last_error: str
    restarts: int
    updated_at: float | None


class EventItem(BaseModel):
    id: int
    ts: float
    node_id: str
    level: str
    source: str
    message: str


class NodeIdentity(BaseModel):
    node_id: str
    role: str
    hostname: str
    version: str
    uptime_sec: float


class ClusterSummary(BaseModel):
    nodes_total: int
    nodes_online: int
    workers_online: int


class SystemLoad(BaseModel):
    cpu_percent: float
    ram_percent: float
    cpu_cores: int
    total_ram_gb: float
    available_ram_gb: float


class StatusResponse(BaseModel):
    node: NodeIdentity
    is_running: bool = Field(description="True while any engine of an online node is asked to run.")
    engines: list[EngineStatus]
    counters: dict[str, int]
    cluster: ClusterSummary
    system: SystemLoad
    events: list[EventItem]


class NodeInfo(BaseModel):
    node_id: str
    role: str
    hostname: str
    version: str
    status: str
    online: bool
    target_status: str | None
    heartbeat_age_sec: float | None
    cpu_percent: float | None
    ram_percent: float | None
    api_url: str
    is_self: bool
    engines: list[EngineStatus]


class NodesResponse(BaseModel):
    nodes: list[NodeInfo]


class AutoProfile(BaseModel):
    device: str
    cpu_cores: int
    total_ram_gb: float
    available_ram_gb: float
    gpu_name: str
    gpu_memory_gb: float
    model_size: str
    train_batch_size: int
    train_seq_len: int
    max_generate_tokens: int
    max_crawler_workers: int
    pytorch_cpu_threads: int
    spm_num_threads: int
    auto_tune: bool
    auto_chosen: list[str] = Field(description="Values chosen by auto-tune (the others are explicit).")


class RuntimeConfig(BaseModel):
    node_id: str
    system_role: str
    version: str
    database_backend: str
    admin_token_required: bool
    read_token_required: bool = Field(description="Reads need ADMIN_READ_TOKEN (or the admin token).")
    max_generate_tokens: int
    use_production_model: bool
    auto_tune_realtime: bool
    auto_profile: AutoProfile
    db_ui_url: str = Field("", description="DB_UI_URL: the database console the dashboard links to.")


class ApiIndex(BaseModel):
    name: str
    version: str
    node_id: str
    docs: str = Field(description="Interactive API documentation (OpenAPI at /openapi.json)")
    endpoints: list[str] = Field(description="Every GET endpoint without path parameters")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
