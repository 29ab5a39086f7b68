"""`phoenix crd` and `phoenix render`: the API's generated artefacts, for repos and reviews."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from phoenix_operator import KIND, yamlio
from phoenix_operator.api.crdgen import write_or_check
from phoenix_operator.api.documents import load_documents, parse_phoenix_deployments
from phoenix_operator.render.objects import Capabilities, Target, render_all


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout holding crds/ (where `phoenix crd` writes); cwd upwards."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists() and (candidate / "crds").is_dir():
            return candidate
    raise click.ClickException("run `phoenix crd` inside the phoenix-operator checkout (no crds/ found)")


@click.command("crd")
@click.option("--check", is_flag=True, help="Fail (exit 1) when a checked-in CRD is stale.")
@click.option("--print", "print_only", is_flag=True, help="Print the CRD instead of writing files.")
def crd(check: bool, print_only: bool) -> None:
    """Generate crds/ (and the chart's copy) from the pydantic models."""
    if print_only:
        from phoenix_operator.api.crdgen import render_crd_yaml

        sys.stdout.write(render_crd_yaml())
        return
    root = find_repo_root()
    stale = write_or_check(root, check=check)
    if check:
        if stale:
            names = ", ".join(str(p.relative_to(root)) for p in stale)
            raise click.ClickException(f"stale generated CRD(s): {names}; run `phoenix crd` and commit")
        click.echo("CRDs up to date")
    else:
        click.echo("wrote " + (", ".join(str(p.relative_to(root)) for p in stale) or "nothing (up to date)"))


@click.command("render")
@click.option("-f", "--filename", required=True, help="PhoenixDeployment YAML file ('-' for stdin).")
@click.option("-n", "--namespace", default=None, help="Namespace when the file sets none.")
@click.option("--milvus-operator", is_flag=True, help="Render a Milvus CR (Milvus Operator installed).")
@click.option("--prometheus-operator", is_flag=True, help="Render PodMonitor/PrometheusRule.")
def render(filename: str, namespace: str | None, milvus_operator: bool, prometheus_operator: bool) -> None:
    """Print the objects the operator would apply for each PhoenixDeployment in a file."""
    deployments = parse_phoenix_deployments(load_documents(filename))
    if not deployments:
        raise click.ClickException(f"no {KIND} in {filename}")
    caps = Capabilities(milvus_operator=milvus_operator, prometheus_operator=prometheus_operator)
    objects = []
    for pd in deployments:
        ns = pd.metadata.get("namespace") or namespace or "default"
        objects += render_all(Target(name=pd.metadata["name"], namespace=ns), pd.spec, capabilities=caps)
    sys.stdout.write(yamlio.dump_all(objects))
