"""YAML output that humans can review: multi-line strings (config.pbtxt, scripts) as blocks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

try:
    # libyaml's emitter: five times faster than PyYAML's pure-Python one, with the same output
    # (tested); the reconciler renders the gateway's spec file on every pass.
    from yaml import CSafeDumper as _SafeDumper
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeDumper as _SafeDumper  # type: ignore[assignment]


class _BlockDumper(_SafeDumper):
    pass


def _str(dumper: yaml.representer.SafeRepresenter, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        # Trailing spaces on a line make PyYAML fall back to quoting; strip them (never significant here).
        value = "\n".join(line.rstrip() for line in value.split("\n"))
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_BlockDumper, sort_keys=False, width=120)


def dump_all(objs: Iterable[Any]) -> str:
    return yaml.dump_all(list(objs), Dumper=_BlockDumper, sort_keys=False, width=120)
