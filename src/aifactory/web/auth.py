"""Who may call what: the admin token for state-changing calls, the optional read token for reads.

Both travel in the `x-admin-token` header and are declared as OpenAPI security schemes (the "Authorize"
button of /docs).
  ADMIN_API_TOKEN   needed by every state-changing route (POST, PUT, PATCH, DELETE). Each admin router
                    carries `AdminOnly` itself, so a route added to it is protected from the start.
  ADMIN_READ_TOKEN  when set, needed by every read too (the admin token works as well). For a factory
                    on a LAN that should not show its data to everyone; use the same value for both to
                    have one token for everything. Read routers get `ReadAccess` where the app includes
                    them.

Routes outside both guards must be listed in OPEN_BY_DESIGN with the reason; tests/web/test_auth.py
walks `app.routes` and fails on any route that is neither guarded nor listed, so a new route cannot
be left open by accident. The serving routes (/api/generate, /v1/..., /ollama/..., /tokenize,
/detokenize, /tokenizer_info) are guarded by their own API_KEYS and join this list.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from aifactory.settings import Settings
from aifactory.web.errors import ServingError

HEADER = "x-admin-token"

# Paths (exact, or a prefix ending in "/") that are open by design, and why.
OPEN_BY_DESIGN: dict[str, str] = {
    "/healthz": "liveness probe for load balancers and scripts; it says only ok or degraded",
    "/openapi.json": "the API's description, no data",
    "/docs": "interactive documentation, no data (its calls carry the tokens)",
    "/docs/oauth2-redirect": "part of the interactive documentation",
    "/redoc": "documentation, no data",
    # The generation APIs (docs/serving.md) answer the tools people point at the factory; they are
    # guarded by API_KEYS (require_api_key) instead, and tests/serve checks each carries that guard.
    "/api/generate": "generation: guarded by API_KEYS",
    "/v1/": "OpenAI-compatible generation: guarded by API_KEYS",
    "/tokenize": "tokenizer endpoint for lm-evaluation-harness: guarded by API_KEYS",
    "/detokenize": "tokenizer endpoint for lm-evaluation-harness: guarded by API_KEYS",
    "/tokenizer_info": "tokenizer endpoint for lm-evaluation-harness: guarded by API_KEYS",
    "/ollama": "Ollama-compatible base URL (answers 'Ollama is running', as Ollama does)",
    "/ollama/": "Ollama-compatible generation: guarded by API_KEYS",
    # The dashboard (web/routes/dashboard.py): the page and its scripts hold no data; every call they
    # make carries the token kept in the browser.
    "/": "the dashboard page, no data (the API index is at /api, read-guarded)",
    "/static": "the mount of the dashboard's files (below)",
    "/static/": "the dashboard's scripts, styles and icon, no data",
}


def is_open_by_design(path: str) -> bool:
    return path in OPEN_BY_DESIGN or any(  # "/" is the page alone, not a prefix of every path
        prefix.endswith("/") and prefix != "/" and path.startswith(prefix) for prefix in OPEN_BY_DESIGN
    )


admin_scheme = APIKeyHeader(
    name=HEADER,
    scheme_name="AdminToken",
    description="ADMIN_API_TOKEN: needed by every state-changing call when set.",
    auto_error=False,
)
read_scheme = APIKeyHeader(
    name=HEADER,
    scheme_name="ReadToken",
    description="ADMIN_READ_TOKEN (or ADMIN_API_TOKEN): needed by reads when ADMIN_READ_TOKEN is set.",
    auto_error=False,
)


def admin_token_required(settings: Settings) -> bool:
    return bool(settings.admin_api_token.get_secret_value())


def _matches(given: str | None, *expected: str) -> bool:
    # compare_digest takes the same time wherever the first wrong character is.
    return given is not None and any(
        token and hmac.compare_digest(given.encode(), token.encode()) for token in expected
    )


def require_admin(request: Request, token: Annotated[str | None, Security(admin_scheme)] = None) -> None:
    expected = request.app.state.ctx.settings.admin_api_token.get_secret_value()
    if not expected:
        return  # no token configured: start-up already refused this unless the server is loopback-only
    if not _matches(token, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"admin token missing or wrong: send ADMIN_API_TOKEN in the {HEADER} header",
        )


def require_read(request: Request, token: Annotated[str | None, Security(read_scheme)] = None) -> None:
    settings = request.app.state.ctx.settings
    read = settings.admin_read_token.get_secret_value()
    if not read:
        return
    if not _matches(token, read, settings.admin_api_token.get_secret_value()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"read token missing or wrong: send ADMIN_READ_TOKEN in the {HEADER} header",
        )


AdminOnly = Depends(require_admin)
ReadAccess = Depends(require_read)


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
    raise ServingError(  # rendered in the shape of the API that was called
        401,
        "API key missing or wrong: send one of API_KEYS as 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
        "invalid_api_key",
    )


ApiKey = Depends(require_api_key)
