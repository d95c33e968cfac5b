"""The error every generation API raises: a status, a message and a code, rendered by web/serving.py in
the shape of the API that was called (OpenAI's error object, Ollama's {"error"}, the native API's)."""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str = "error",
        *,
        retry_after: int | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.retry_after, self.param = retry_after, param

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> ServingError:
        return cls(
            int(event.get("status", 500)),
            str(event.get("message", "generation failed")),
            str(event.get("code", "error")),
            retry_after=event.get("retry_after"),
        )
