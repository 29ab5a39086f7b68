"""``phoenix gateway``: run the chat gateway."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import click

from phoenix_operator.gateway.settings import MODEL_IO_LAYOUTS


@click.command("gateway")
@click.option(
    "--spec",
    "spec_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PhoenixDeployment YAML/JSON (a whole object, or only its spec as the operator mounts it).",
)
@click.option("--triton-url", required=True, help="Triton's gRPC address, HOST:PORT.")
@click.option(
    "--milvus-uri",
    default=None,
    help="Milvus address (http://HOST:19530); retrieval is on when this and spec.retrieval are set.",
)
@click.option(
    "--milvus-token",
    default=None,
    envvar="PHOENIX_MILVUS_TOKEN",
    show_envvar=True,
    help="Milvus token (user:password or API key); prefer the environment variable.",
)
@click.option(
    "--classifier",
    "classifier_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="PHOENIX_CLASSIFIER_DIR",
    show_envvar=True,
    help="Classifier directory (phoenix classifier train --out); default: the built-in BANKING77 one "
    "(trained on first use unless the image carries one).",
)
@click.option(
    "--classifier-uri",
    default=None,
    help="HTTP(S) URL of a classifier directory packed as .tar.gz (fetched once into the cache).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers-threads",
    "worker_threads",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Threads for embedding and classification (CPU-bound).",
)
@click.option(
    "--model-io",
    type=click.Choice(sorted(MODEL_IO_LAYOUTS)),
    default=None,
    help="Triton tensor names: vllm (text_input/text_output/stream/sampling_parameters) or phoenix "
    "(PROMPT/MAX_TOKENS/TEXT_OUTPUT). Default: vllm when spec.model.backend is vllm.",
)
@click.option(
    "--shutdown-timeout",
    default=25.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds SIGTERM waits for in-flight requests.",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"])
)
def gateway(
    spec_path: Path,
    triton_url: str,
    milvus_uri: str | None,
    milvus_token: str | None,
    classifier_dir: Path | None,
    classifier_uri: str | None,
    host: str,
    port: int,
    worker_threads: int,
    model_io: str | None,
    shutdown_timeout: float,
    log_level: str,
) -> None:
    """Run the OpenAI-compatible chat gateway (urgency flagging, retrieval, streaming to Triton).

    SIGTERM stops accepting connections and lets in-flight requests finish.
    """
    import uvicorn

    from phoenix_operator.gateway.app import Gateway, create_app
    from phoenix_operator.gateway.settings import GatewaySettings, SpecFileError, load_spec

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        spec = load_spec(spec_path)
    except SpecFileError as exc:
        raise click.ClickException(str(exc)) from None
    if classifier_uri is not None:
        if classifier_dir is not None:
            raise click.UsageError("give --classifier or --classifier-uri, not both")
        from phoenix_operator.ml.fetch import ClassifierFetchError, fetch_classifier

        try:
            classifier_dir = fetch_classifier(classifier_uri)
        except ClassifierFetchError as exc:
            raise click.ClickException(str(exc)) from None
    settings = GatewaySettings(
        spec=spec,
        triton_url=triton_url.removeprefix("grpc://"),
        milvus_uri=milvus_uri,
        milvus_token=milvus_token,
        classifier_dir=classifier_dir,
        worker_threads=worker_threads,
        model_io=MODEL_IO_LAYOUTS[model_io] if model_io else None,
    )
    app = create_app(Gateway(settings))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # the gateway writes its own structured line per request
        timeout_graceful_shutdown=math.ceil(shutdown_timeout),
        lifespan="on",
    )
    uvicorn.Server(config).run()
