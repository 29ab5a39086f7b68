"""A classifier published at a URL: fetched once over real HTTP, validated before it is used."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phoenix_operator.data import banking77
from phoenix_operator.gateway.cli import gateway
from phoenix_operator.ml.classifier import (
    FeatureConfig,
    IntentClassifier,
    read_labelled_csv,
    train_classifier,
)
from phoenix_operator.ml.fetch import ClassifierFetchError, fetch_classifier, pack_classifier

WORDS_ONLY = FeatureConfig(embedding_weight=0.0, char_ngrams=(3, 3))


@pytest.fixture(scope="module")
def small_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, labels = read_labelled_csv(banking77("train"))
    directory = tmp_path_factory.mktemp("small") / "classifier"
    train_classifier(texts[::6], labels[::6], WORDS_ONLY).save(directory)
    return directory


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_fetched_classifier_predicts_like_the_original_and_is_reused(
    small_classifier: Path, served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    pack_classifier(small_classifier, root / "clf.tar.gz")
    cache = tmp_path / "cache"
    fetched = fetch_classifier(f"{base}/clf.tar.gz", cache=cache)
    text = "I think someone stole my card, please block it"
    assert IntentClassifier.load(fetched).predict(text) == IntentClassifier.load(small_classifier).predict(
        text
    )
    (root / "clf.tar.gz").unlink()  # a second start must not need the server
    assert fetch_classifier(f"{base}/clf.tar.gz", cache=cache) == fetched


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_tar({"../escape.txt": b"x"}), "not a readable"),
        (_tar({"README": b"hello"}), "no metadata.json"),
        (_tar({"metadata.json": b"{not json"}), "not a valid classifier"),
        (b"plain text, not an archive", "not a readable"),
    ],
)
def test_bad_archives_are_refused_and_nothing_is_cached(
    served: tuple[str, Path], tmp_path: Path, payload: bytes, message: str
) -> None:
    base, root = served
    (root / "bad.tar.gz").write_bytes(payload)
    cache = tmp_path / "cache"
    with pytest.raises(ClassifierFetchError, match=message):
        fetch_classifier(f"{base}/bad.tar.gz", cache=cache)
    assert not list((cache / "classifier-url").glob("*/metadata.json"))
    assert not (tmp_path / "escape.txt").exists()


def test_unreachable_and_non_http_urls_fail_clearly(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    with pytest.raises(ClassifierFetchError, match="cannot download"):
        fetch_classifier(f"{base}/missing.tar.gz", cache=tmp_path)
    with pytest.raises(ClassifierFetchError, match="http"):
        fetch_classifier("s3://bucket/clf.tar.gz", cache=tmp_path)


def test_the_gateway_command_accepts_the_args_the_operator_renders(tmp_path: Path) -> None:
    """The Deployment's args, as rendered for each example, parse with the real command."""
    import yaml

    from phoenix_operator.api.models import PhoenixDeployment
    from phoenix_operator.render.objects import GATEWAY_CLASSIFIER_DIR, GATEWAY_SPEC_DIR, Target, gateway_args

    examples = Path(__file__).resolve().parents[1] / "examples"
    seen = 0
    for path in sorted(examples.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "PhoenixDeployment":
                continue
            pd = PhoenixDeployment.model_validate(doc)
            args = gateway_args(Target(name=pd.metadata["name"], namespace="ns", uid="u"), pd.spec)
            spec_file = tmp_path / "spec.yaml"
            spec_file.write_text("{}")
            classifier = tmp_path / "classifier"
            classifier.mkdir(exist_ok=True)
            local = [
                a.replace(GATEWAY_SPEC_DIR + "/spec.yaml", str(spec_file)).replace(
                    GATEWAY_CLASSIFIER_DIR, str(classifier)
                )
                for a in args
            ]
            ctx = gateway.make_context("gateway", local)
            assert ctx.params["port"] == 8000 and ctx.params["host"] == "0.0.0.0"
            seen += 1
    assert seen >= 3
