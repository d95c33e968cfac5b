"""Admin authentication: state-changing calls need the `x-admin-token` header when a token is set."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from aifactory.settings import Settings


def admin_token_required(settings: Settings) -> bool:
    return bool(settings.admin_api_token.get_secret_value())


def require_admin(
    request: Request,
    x_admin_token: Annotated[str | None, Header(description="The ADMIN_API_TOKEN of the factory.")] = None,
) -> None:
    expected = request.app.state.ctx.settings.admin_api_token.get_secret_value()
    if not expected:
        return  # no token configured: start-up already refused this unless the server is loopback-only
    # compare_digest takes the same time wherever the first wrong character is.
    if x_admin_token is None or not hmac.compare_digest(x_admin_token.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="admin token missing or wrong: send it in the x-admin-token header",
        )


AdminOnly = Depends(require_admin)
