"""A minimal Triton-compatible HTTP API for the digital twin (KServe v2 + Triton's model control).

Just enough for what the operator does to a Triton pod (readiness, ``get_model_config``,
``load_model(name, config=...)``), so its actuator reaches the twin exactly as it reaches a real
server and cannot tell the difference. Endpoints and errors: docs/demo.md#the-twin-in-detail.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from phoenix_operator.sim.modelconfig import ModelConfigError

SERVER_VERSION = "2.51.0"
_MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(r"/v2/health/(?:live|ready)"), "health"),
    ("GET", re.compile(r"/v2"), "server_metadata"),
    ("GET", re.compile(_MODEL + r"/config"), "model_config"),
    ("GET", re.compile(_MODEL + r"/ready"), "model_ready"),
    ("GET", re.compile(_MODEL), "model_metadata"),
    ("POST", re.compile(r"/v2/repository/index"), "repository_index"),
    ("POST", re.compile(r"/v2/repository/models/(?P<model>[^/]+)/load"), "load"),
)


class ModelHost(Protocol):
    """What the API serves: one model whose config can be read and replaced."""

    @property
    def model_name(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def model_config(self) -> dict[str, Any]: ...

    def load_model_config(self, config: Mapping[str, Any] | None) -> None:
        """Serve ``config`` from now on (None: reload the one in force); raises ModelConfigError."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _unquote(name: str) -> str:
    from urllib.parse import unquote

    return unquote(name)


class TritonControlServer:
    """Serves :class:`ModelHost` on ``host:port`` (port 0 = a free one) from a background thread."""

    def __init__(self, model_host: ModelHost, host: str = "127.0.0.1", port: int = 0) -> None:
        self.model_host = model_host
        self.loads: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``host:port``, as tritonclient and the endpoint override want it."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> TritonControlServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="twin-triton-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever: only when it runs
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> TritonControlServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- request handling (pure-ish)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON body or None) for one request."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        for verb, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if verb != method:
                return 405, {"error": f"{method} not allowed on {path}"}
            try:
                result: tuple[int, Any] = getattr(self, "_" + name)(match.groupdict(), body)
            except ApiError as exc:
                return exc.status, {"error": str(exc)}
            return result
        return 404, {"error": "Not Found"}

    def _model(self, params: Mapping[str, str | None]) -> str:
        name = _unquote(params.get("model") or "")
        if name != self.model_host.model_name:
            raise ApiError(400, f"Request for unknown model: '{name}' is not found")
        version = params.get("version")
        if version not in (None, "1"):
            raise ApiError(400, f"Request for unknown model: '{name}' version {version} is not found")
        return name

    def _health(self, _params: Mapping[str, str | None], _body: bytes) -> tuple[int, Any]:
        return 200, None

    def _server_metadata(self, _params: Mapping[str, str | None], _body: bytes) -> tuple[int, Any]:
        return 200, {
            "name": "triton",
            "version": SERVER_VERSION,
            "extensions": ["model_repository", "model_configuration", "model_repository(unload_dependents)"],
        }

    def _model_config(self, params: Mapping[str, str | None], _body: bytes) -> tuple[int, Any]:
        self._model(params)
        return 200, self.model_host.model_config()

    def _model_ready(self, params: Mapping[str, str | None], _body: bytes) -> tuple[int, Any]:
        self._model(params)
        return 200, None

    def _model_metadata(self, params: Mapping[str, str | None], _body: bytes) -> tuple[int, Any]:
        name = self._model(params)
        return 200, {"name": name, "versions": ["1"], "platform": self.model_host.backend}

    def _repository_index(self, _params: Mapping[str, str | None], _body: bytes) -> tuple[int, Any]:
        return 200, [{"name": self.model_host.model_name, "version": "1", "state": "READY"}]

    def _load(self, params: Mapping[str, str | None], body: bytes) -> tuple[int, Any]:
        name = self._model(params)
        try:
            request = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise ApiError(400, f"failed to parse the request JSON: {exc}") from None
        parameters = (request or {}).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ApiError(400, "'parameters' must be a JSON object")
        if any(str(key).startswith("file:") for key in parameters):
            raise ApiError(400, "the digital twin accepts config overrides only, not model files")
        config: dict[str, Any] | None = None
        if "config" in parameters:
            raw = parameters["config"]
            try:
                config = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError as exc:
                raise ApiError(400, f"failed to parse the model config: {exc}") from None
            if not isinstance(config, dict):
                raise ApiError(400, "the model config must be a JSON object")
            if config.get("name", name) != name:
                raise ApiError(
                    400, f"model config name '{config.get('name')}' does not match the model '{name}'"
                )
        try:
            self.model_host.load_model_config(config)
        except ModelConfigError as exc:
            raise ApiError(400, f"load failed for model '{name}': {exc}") from None
        with self._lock:
            self.loads.append(config or {})
        return 200, None


def _handler_for(server: TritonControlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: tritonclient pools connections
        server_version = f"triton-twin/{SERVER_VERSION}"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            status, payload = server.handle(method, self.path, body)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo has its own view
            return

    return Handler
