"""The data the product runs on ships inside the package, with its attribution.

A user's clone has no data folder beside it: these tests hold the package to that, statically (no source
names it) and by running the benchmark from a clone that has nothing beside it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phoenix_operator import data

REPO = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_banking77_splits_have_the_published_sizes_and_77_intents() -> None:
    train, test = _rows(data.banking77("train")), _rows(data.banking77("test"))
    categories = json.loads(data.banking77_categories().read_text())
    assert (len(train), len(test), len(categories)) == (10_003, 3_080, 77)
    assert {r["category"] for r in train} == set(categories) == {r["category"] for r in test}
    assert all(r["text"].strip() for r in train + test)
    with pytest.raises(ValueError, match="splits"):
        data.banking77("validation")


def test_mooncake_trace_is_the_conversation_workload() -> None:
    lines = data.mooncake_trace().read_text().splitlines()
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert len(lines) == 12_031
    assert set(first) >= {"timestamp", "input_length", "output_length", "hash_ids"}
    assert last["timestamp"] / 1000 == pytest.approx(3537, abs=1)


@pytest.mark.parametrize(
    ("folder", "licence", "authors"),
    [
        ("traces", "CC-BY 4.0", "Splitwise"),
        ("traces", "Apache-2.0", "Mooncake"),
        ("banking77", "CC-BY 4.0", "Casanueva"),
    ],
)
def test_every_shipped_data_set_carries_its_attribution(folder: str, licence: str, authors: str) -> None:
    readme = (Path(data.__file__).parent / folder / "README.md").read_text()
    assert licence in readme and authors in readme


def test_nothing_in_the_repository_reads_a_shared_folder_beside_it() -> None:
    pattern = re.compile(r"\.\./shared|parents\[\d\]\s*/\s*\"shared\"|/\s*\"shared\"\s*/")
    offenders = [
        str(path.relative_to(REPO))
        for root in ("operator", "tests", ".ci")
        for path in (REPO / root).rglob("*")
        if path.is_file() and path.suffix in {".py", ".sh", ".toml", ""} and path != Path(__file__)
        if pattern.search(path.read_text(errors="ignore"))
    ] + [name for name in ("Makefile", "pyproject.toml") if pattern.search((REPO / name).read_text())]
    assert offenders == []


@pytest.mark.slow
def test_a_clone_with_nothing_beside_it_runs_the_benchmark(tmp_path: Path) -> None:
    """A git clone of the committed tree, alone in a folder, runs ``phoenix bench --quick``."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("the test needs the repository's git history (it clones the committed tree)")
    clone = tmp_path / "alone" / "phoenix"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{REPO}", str(clone)], check=True)
    assert [p.name for p in clone.parent.iterdir()] == ["phoenix"]  # nothing beside the clone
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(clone / "operator"), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "phoenix_operator.cli",
            "bench",
            "--quick",
            "--policies",
            "phoenix,static-avg",
            "--no-plots",
            "--out",
            str(tmp_path / "out"),
            "--json",
            str(out),
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert "traces/azure-llm-2023-conv.csv" in json.dumps(report)
    import phoenix_operator

    assert str(clone) not in phoenix_operator.__file__  # the subprocess, not this one, used the clone
