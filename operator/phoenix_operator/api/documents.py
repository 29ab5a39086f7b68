"""PhoenixDeployment documents read from a file or stdin, shared by every command that takes a spec."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from phoenix_operator import API_GROUP, KIND
from phoenix_operator.api.models import PhoenixDeployment


def load_documents(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def parse_phoenix_deployments(docs: list[dict[str, Any]]) -> list[PhoenixDeployment]:
    """The PhoenixDeployments in a file, with every validation error naming its field."""
    out = []
    for doc in docs:
        if doc.get("kind") != KIND or not str(doc.get("apiVersion", "")).startswith(API_GROUP + "/"):
            continue
        try:
            out.append(PhoenixDeployment.model_validate(doc))
        except ValidationError as exc:
            name = (doc.get("metadata") or {}).get("name", "?")
            lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
            raise click.ClickException(f"invalid PhoenixDeployment {name}:\n" + "\n".join(lines)) from exc
    return out
