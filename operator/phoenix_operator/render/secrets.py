"""Names of the Secrets the operator generates for a deployment, and how their values are used.

Pure: the reconciler creates these Secrets once (a random value, never overwritten) and reads them
back; the renderers only reference them. The operator reads no other Secret than these and the
ones a spec names.
"""

from __future__ import annotations

from collections.abc import Mapping

from phoenix_operator.api.models import SecretKeyRef

#: Header Triton's restricted model-control endpoints require (``--http-restricted-api`` /
#: ``--grpc-restricted-protocol``); its value is the generated key.
TRITON_CONTROL_HEADER = "phoenix-control-key"
#: The gRPC metadata key for the same restriction: Triton 2.51 prefixes the configured key with
#: ``triton-grpc-protocol-`` for gRPC (its error says so: "expecting header 'triton-grpc-protocol-…'").
TRITON_CONTROL_GRPC_HEADER = f"triton-grpc-protocol-{TRITON_CONTROL_HEADER}"
#: Triton API categories only the key holder may call: loading/unloading models and their
#: configs, shared-memory regions, tracing and log settings. Inference, health, metadata and
#: statistics stay open to the clients the NetworkPolicy admits.
TRITON_RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "trace", "logging")
#: Environment variable the Triton container receives the key in (args reference it as ``$(…)``).
TRITON_CONTROL_KEY_ENV = "PHOENIX_TRITON_CONTROL_KEY"
#: Data key holding the value in every generated Secret.
SECRET_VALUE_KEY = "key"

#: Managed Milvus' root credential: keys of its Secret and the user it is for.
MILVUS_USERNAME_KEY = "username"
MILVUS_PASSWORD_KEY = "password"
MILVUS_ROOT_USER = "root"


def triton_control_secret_name(deployment: str) -> str:
    """The Secret with the key for Triton's model-control (model-repository, model-config) API."""
    return f"{deployment}-triton-control"


def milvus_root_secret_name(deployment: str) -> str:
    """The Secret with managed Milvus' generated root password (``username`` is ``root``)."""
    return f"{deployment}-milvus-root"


def milvus_token(data: dict[str, str] | None) -> str | None:
    """``user:password`` from a managed-Milvus root Secret's (decoded) data; None when unusable."""
    if not data:
        return None
    user = data.get(MILVUS_USERNAME_KEY, "").strip()
    password = data.get(MILVUS_PASSWORD_KEY, "").strip()
    return f"{user}:{password}" if user and password else None


def triton_control_headers(data: dict[str, str] | None, grpc: bool = False) -> dict[str, str]:
    """Headers that unlock Triton's model-control API, from the control Secret's (decoded) data.

    Empty when the Secret is missing or has no key: the call then goes out without the header and
    Triton answers 403 (HTTP) / UNAVAILABLE (gRPC) naming the header it expects.
    """
    key = (data or {}).get(SECRET_VALUE_KEY, "").strip()
    if not key:
        return {}
    return {TRITON_CONTROL_GRPC_HEADER if grpc else TRITON_CONTROL_HEADER: key}


class TokenSecretError(ValueError):
    """The token Secret named by ``tokenSecretRef`` is unusable; ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def resolve_token(secret_data: Mapping[str, bytes | str] | None, ref: SecretKeyRef | None) -> str | None:
    """The Milvus token from a Secret's data (values already base64-decoded), or None without a ref.

    Surrounding whitespace is stripped: a token written with ``echo`` into a file carries a newline
    that Milvus would reject as a wrong password. Raises TokenSecretError (never returns "") when
    the Secret is missing (``secret_data`` None), lacks the key, or the value is empty or not UTF-8.
    """
    if ref is None:
        return None
    where = f"retrieval.milvus.external.tokenSecretRef (Secret {ref.name!r}, key {ref.key!r})"
    if secret_data is None:
        raise TokenSecretError(
            "SecretNotFound", f"{where}: the Secret does not exist; create it or fix the name"
        )
    if ref.key not in secret_data:
        present = ", ".join(sorted(secret_data)) or "none"
        raise TokenSecretError(
            "SecretKeyNotFound", f"{where}: the Secret has no key {ref.key!r} (keys: {present}); fix the key"
        )
    value = secret_data[ref.key]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenSecretError("SecretValueInvalid", f"{where}: the value is not UTF-8 text") from None
    token = value.strip()
    if not token:
        raise TokenSecretError("SecretValueInvalid", f"{where}: the value is empty")
    return token
