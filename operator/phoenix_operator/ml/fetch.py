"""Fetch a classifier directory published as a ``.tar.gz`` at an HTTP(S) URL.

The archive is unpacked with tarfile's ``data`` filter (no absolute paths, links out of the
folder or device files) into the cache, keyed by the URL, and only a folder that
:meth:`IntentClassifier.load` accepts is moved into place, so a bad download never replaces a
good one.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from phoenix_operator.ml.classifier import IntentClassifier
from phoenix_operator.settings import cache_root

#: Largest archive accepted (a BANKING77 classifier is a few MB).
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024


class ClassifierFetchError(RuntimeError):
    """The URL could not be read, or what it served is not a classifier archive."""


def _classifier_root(unpacked: Path) -> Path:
    """The folder holding metadata.json: the archive's top level or its single sub-folder."""
    if (unpacked / "metadata.json").is_file():
        return unpacked
    children = [p for p in unpacked.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "metadata.json").is_file():
        return children[0]
    raise ClassifierFetchError("the archive holds no classifier (no metadata.json at its top level)")


def fetch_classifier(url: str, cache: Path | None = None, timeout_s: float = 60.0) -> Path:
    """Download and unpack ``url`` once; later calls with the same URL reuse the folder."""
    if not url.startswith(("http://", "https://")):
        raise ClassifierFetchError(f"classifier URL must be http(s)://, got {url!r}")
    target = (cache or cache_root()) / "classifier-url" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (target / "metadata.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "classifier.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, archive.open("wb") as out:
                copied = 0
                while chunk := response.read(1 << 20):
                    copied += len(chunk)
                    if copied > MAX_ARCHIVE_BYTES:
                        raise ClassifierFetchError(f"{url}: larger than {MAX_ARCHIVE_BYTES} bytes")
                    out.write(chunk)
        except OSError as exc:
            raise ClassifierFetchError(f"cannot download {url}: {exc}") from exc
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise ClassifierFetchError(f"{url} is not a readable .tar.gz: {exc}") from exc
        root = _classifier_root(unpacked)
        try:
            IntentClassifier.load(root)
        except Exception as exc:
            raise ClassifierFetchError(f"{url}: not a valid classifier: {exc}") from exc
        try:
            root.rename(target)
        except OSError:
            if not (target / "metadata.json").is_file():
                raise
    return target


def pack_classifier(directory: Path, archive: Path) -> Path:
    """Write ``directory`` as the ``.tar.gz`` that :func:`fetch_classifier` reads."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return archive
