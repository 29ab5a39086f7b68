"""Build the local cluster's binaries from pinned Go modules, once, into a per-user cache.

From source because the Go module proxy is reachable where release downloads are not, and every
tool (Kubernetes, etcd, kwok, helm) is a Go module. Pins and cache: docs/demo.md, "The cluster's
binaries".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TextIO

__all__ = [
    "TOOLS",
    "BuildError",
    "ToolSpec",
    "binary_path",
    "build_tools",
    "cache_root",
    "ensure_tools",
    "find_go",
    "tool_bin_dir",
]

KUBERNETES_VERSION = "v1.34.4"

_K8S_VERSION_LDFLAGS = " ".join(
    f"-X {pkg}.{var}={val}"
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    for var, val in (("gitVersion", KUBERNETES_VERSION), ("gitMajor", "1"), ("gitMinor", "34"))
)


class BuildError(RuntimeError):
    """A tool could not be built; the message is one line meant for the user."""


@dataclass(frozen=True)
class ToolSpec:
    """One pinned Go tool: where its wrapper module is and which binaries it yields."""

    name: str
    version: str
    #: binary name -> Go main package (built with ``go build -o bin/<name> <package>``).
    binaries: dict[str, str]
    ldflags: str = "-s -w"
    #: extra environment for ``go`` (e.g. ``GOTOOLCHAIN`` when a pin needs a newer Go).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "kubernetes",
            KUBERNETES_VERSION,
            {
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            },
            ldflags="-s -w " + _K8S_VERSION_LDFLAGS,
        ),
        ToolSpec(
            "etcd",
            "v3.6.16",
            {"etcd": "go.etcd.io/etcd/server/v3"},
        ),
        ToolSpec(
            "kwok",
            "v0.8.0",
            {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        ),
        ToolSpec(
            "helm",
            "v3.22.0",
            {"helm": "helm.sh/helm/v3/cmd/helm"},
            ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v3.22.0",
        ),
    )
}

#: Which tool ships which binary, for callers that only know the binary's name.
_BINARY_TOOL: dict[str, str] = {b: spec.name for spec in TOOLS.values() for b in spec.binaries}


def cache_root() -> Path:
    """The per-user cache folder for built tools (outside the repo, shared by all checkouts)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "phoenix-operator" / "tools"


def tool_bin_dir(tool: str) -> Path:
    spec = TOOLS[tool]
    return cache_root() / spec.key / "bin"


def binary_path(binary: str) -> Path:
    """Path of a cached binary such as ``kube-apiserver`` or ``kubectl`` (may not exist yet)."""
    return tool_bin_dir(_BINARY_TOOL[binary]) / binary


def find_go() -> str:
    """The ``go`` command to use; ``PHOENIX_GO`` overrides the lookup."""
    candidates = [os.environ.get("PHOENIX_GO"), shutil.which("go"), "/usr/local/go/bin/go"]
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    raise BuildError(
        "Go is not installed (no `go` on PATH or in /usr/local/go/bin); install Go >= 1.24 "
        "(e.g. `apt-get install golang-go`) to build the local cluster's binaries"
    )


def _wrapper_files(tool: str) -> dict[str, bytes]:
    base = resources.files("phoenix_operator.cluster").joinpath("gomod", tool)
    return {name: base.joinpath(name).read_bytes() for name in ("go.mod", "go.sum", "tools.go")}


def fingerprint(spec: ToolSpec) -> str:
    """Hash of everything that decides the binaries' content, to know when a rebuild is due."""
    h = hashlib.sha256()
    for name, data in sorted(_wrapper_files(spec.name).items()):
        h.update(name.encode() + b"\0" + data + b"\0")
    h.update(json.dumps([spec.binaries, spec.ldflags, spec.env, _BUILD_ENV], sort_keys=True).encode())
    return h.hexdigest()[:16]


#: Static, reproducible binaries: no C toolchain needed, same result on every machine.
_BUILD_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly"}


def is_built(tool: str) -> bool:
    spec = TOOLS[tool]
    tool_dir = cache_root() / spec.key
    try:
        info = json.loads((tool_dir / "build-info.json").read_text())
    except (OSError, ValueError):
        return False
    if info.get("fingerprint") != fingerprint(spec):
        return False
    return all(os.access(tool_dir / "bin" / b, os.X_OK) for b in spec.binaries)


#: progress callback: (tool, binary, packages done, packages total or 0 when unknown)
ProgressFn = Callable[[str, str, int, int], None]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on *path*: serialises builds (and cluster up/down) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go_env(spec: ToolSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_BUILD_ENV)
    env.update(spec.env)
    return env


def _count_deps(go: str, workdir: Path, package: str, env: dict[str, str]) -> int:
    """Number of packages `go build` may compile for *package* (the progress bar's total)."""
    try:
        out = subprocess.run(
            [go, "list", "-deps", package],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return 0
    return len(out.split())


def build_tool(tool: str, *, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """Build one tool's binaries into the cache (skipped when present) and return its bin dir."""
    spec = TOOLS[tool]
    root = cache_root()
    tool_dir = root / spec.key
    with file_lock(root / f".{spec.key}.lock"):
        if not force and is_built(tool):
            return tool_dir / "bin"
        go = find_go()
        log_dir = root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{spec.key}.log"
        env = _go_env(spec)
        with tempfile.TemporaryDirectory(prefix=f".build-{spec.key}-", dir=root) as tmp:
            work = Path(tmp) / "src"
            work.mkdir()
            for name, data in _wrapper_files(tool).items():
                (work / name).write_bytes(data)
            out_dir = Path(tmp) / "bin"
            out_dir.mkdir()
            with log_path.open("w") as log:
                for binary, package in spec.binaries.items():
                    _build_one(go, work, out_dir / binary, package, spec, env, log, log_path, progress)
            tool_dir.mkdir(parents=True, exist_ok=True)
            final = tool_dir / "bin"
            if final.exists():
                shutil.rmtree(final)
            os.replace(out_dir, final)
        go_version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout
        info = {"fingerprint": fingerprint(spec), "version": spec.version, "go": go_version.strip()}
        (tool_dir / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        return final


def _build_one(
    go: str,
    work: Path,
    output: Path,
    package: str,
    spec: ToolSpec,
    env: dict[str, str],
    log: TextIO,
    log_path: Path,
    progress: ProgressFn | None,
) -> None:
    total = _count_deps(go, work, package, env) if progress else 0
    done = 0
    if progress:
        progress(spec.name, output.name, 0, total)
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", spec.ldflags, "-o", str(output), package]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    last_error = ""
    for line in proc.stdout:
        log.write(line)
        stripped = line.strip()
        # `go build -v` prints one import path per compiled package; anything else is a message.
        if re.fullmatch(r"[\w./~+-]+", stripped):
            done += 1
            if progress:
                progress(spec.name, output.name, min(done, total) if total else done, total)
        elif stripped:
            last_error = stripped
    rc = proc.wait()
    if rc != 0:
        reason = f": {last_error}" if last_error else ""
        raise BuildError(
            f"building {output.name} ({spec.name} {spec.version}) failed (exit {rc}){reason}; "
            f"full log: {log_path}"
        )
    if progress:
        progress(spec.name, output.name, total or done, total or done)


def build_tools(tools: Sequence[str] | None = None, *, force: bool = False, quiet: bool = False) -> None:
    """Build the given tools (all by default), with a rich progress display unless *quiet*."""
    names = list(tools or TOOLS)
    todo = [t for t in names if force or not is_built(t)]
    if not todo:
        return
    if quiet:
        for tool in todo:
            build_tool(tool, force=force)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    console.print(
        f"[bold]Building {', '.join(todo)} from Go modules[/] (first time only; may take many "
        f"minutes on few cores; cached in {cache_root()})"
    )
    with Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("packages"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def report(tool: str, binary: str, done: int, total: int) -> None:
            label = f"{binary} ({TOOLS[tool].version})"
            if binary not in tasks:
                tasks[binary] = bar.add_task(label, total=total or None)
            bar.update(tasks[binary], completed=done, total=total or None)

        for tool in todo:
            build_tool(tool, progress=report, force=force)


def ensure_tools(tools: Sequence[str] | None = None, *, quiet: bool = False) -> dict[str, Path]:
    """Make sure the tools are built and return ``binary name -> path`` for all their binaries."""
    names = list(tools or TOOLS)
    build_tools(names, quiet=quiet)
    return {b: tool_bin_dir(t) / b for t in names for b in TOOLS[t].binaries}
