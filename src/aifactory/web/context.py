"""What every request handler needs: settings, database and this process's node."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from aifactory.cluster.node import Node
from aifactory.db import Database
from aifactory.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    db: Database
    node: Node
    started_at: float = field(default_factory=time.time)


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(get_context)]
