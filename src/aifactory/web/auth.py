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


def presented_keys(request: Request) -> list[str]:
    """Every credential a request carries: `Authorization: Bearer`, `x-api-key`, `x-admin-token`."""
    keys = []
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        keys.append(authorization[7:].strip())
    keys += [
        request.headers[name].strip() for name in ("x-api-key", "x-admin-token") if name in request.headers
    ]
    return keys


def require_api_key(request: Request) -> None:
    """The generation routes (native generate, /v1, /ollama/api, tokenize): open while API_KEYS is
    empty; otherwise one of its keys, or ADMIN_API_TOKEN, in any of the headers above."""
    settings: Settings = request.app.state.ctx.settings
    allowed = settings.api_key_list()
    if not allowed:
        return
    admin = settings.admin_api_token.get_secret_value()
    if admin:
        allowed = [*allowed, admin]
    for key in presented_keys(request):
        if any(hmac.compare_digest(key.encode(), good.encode()) for good in allowed):
            return
    from aifactory.web.serving import ServingError  # the error is rendered in each API's own shape

    raise ServingError(
        401,
        "API key missing or wrong: send one of API_KEYS as 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
        "invalid_api_key",
    )


ApiKey = Depends(require_api_key)
