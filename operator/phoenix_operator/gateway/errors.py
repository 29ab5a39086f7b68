"""OpenAI-style error objects: every failure a client sees is one of these, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Error ``type`` values (OpenAI's own where one fits; the metric label of errors_total).
INVALID_REQUEST = "invalid_request_error"
RATE_LIMIT = "rate_limit_error"
SERVER_ERROR = "server_error"
UPSTREAM_TIMEOUT = "upstream_timeout"
UPSTREAM_ERROR = "upstream_error"
CLIENT_DISCONNECT = "client_disconnect"

#: Status recorded for a client that went away (nginx's convention; nothing is sent).
CLIENT_CLOSED_STATUS = 499


@dataclass
class GatewayError(Exception):
    """A failure with the HTTP status and OpenAI error fields it is answered with."""

    status: int
    message: str
    type: str = INVALID_REQUEST
    param: str | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, INVALID_REQUEST, param, code)


def internal_error() -> GatewayError:
    """What a client gets for a bug: a request id in the log, no internals in the answer."""
    return GatewayError(
        500, "internal error in the gateway; it has been logged", SERVER_ERROR, None, "internal"
    )
