"""choose_class: client header, intent routes most urgent first, the confidence rule, defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_operator.api.documents import load_documents, parse_phoenix_deployments
from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.ml.classifier import Prediction
from phoenix_operator.ml.cli import REFERENCE_SPEC, reference_spec
from phoenix_operator.ml.routing import ClassChoice, UnknownPriorityClass, choose_class

PRODUCTION = Path(__file__).resolve().parents[1] / "examples" / "production.yaml"
URGENT = ["lost_or_stolen_card", "compromised_card", "card_swallowed"]
ROUTINE = ["card_arrival", "exchange_rate", "top_up_failed", "age_limit"]
LABELS = URGENT + ROUTINE


def production_spec() -> PhoenixDeploymentSpec:
    (deployment,) = parse_phoenix_deployments(load_documents(str(PRODUCTION)))
    return deployment.spec


def make_spec(
    routes: list[dict[str, Any]] | None = None, allow_client: bool = False
) -> PhoenixDeploymentSpec:
    return PhoenixDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "backend": "vllm", "repository": {"uri": "s3://models/m"}},
            "priority": {
                "defaultClass": "standard",
                "classes": [
                    {"name": "bulk", "level": 3, "ttftTargetSeconds": 10},
                    {"name": "urgent", "level": 1, "ttftTargetSeconds": 1.5},
                    {"name": "standard", "level": 2, "ttftTargetSeconds": 3},
                ],
            },
            "gateway": {
                "allowClientPriority": allow_client,
                "routes": routes
                if routes is not None
                else [
                    # Listed least urgent first on purpose: the rule orders by level, not by list.
                    {"priorityClass": "bulk", "intents": ["age_limit"], "minConfidence": 0.5},
                    {"priorityClass": "urgent", "intents": URGENT, "minConfidence": 0.2},
                ],
            },
        }
    )


def prediction(probabilities: dict[str, float]) -> Prediction:
    full = {label: probabilities.get(label, 0.0) for label in LABELS}
    top = max(full, key=full.__getitem__)
    return Prediction(top, full[top], full)


def test_reference_routes_match_examples_production() -> None:
    """The routes shipped in code for `predict`/`bench` are examples/production.yaml's."""
    shipped, example = reference_spec(), production_spec()
    assert shipped.priority == example.priority
    assert shipped.gateway.routes == example.gateway.routes
    assert REFERENCE_SPEC["gateway"]["routes"][0]["intents"] == example.gateway.routes[0].intents


@pytest.mark.parametrize(
    ("probabilities", "expected"),
    [
        (
            {"lost_or_stolen_card": 0.91, "card_arrival": 0.09},
            ClassChoice("urgent", 1, "intent lost_or_stolen_card (0.91)"),
        ),
        (
            {"card_arrival": 0.66, "compromised_card": 0.2, "card_swallowed": 0.14},
            ClassChoice("urgent", 1, "urgent intents sum 0.34 ≥ 0.2"),
        ),
        ({"card_arrival": 0.81, "compromised_card": 0.19}, ClassChoice("standard", 2, "default class")),
        ({"age_limit": 0.45, "exchange_rate": 0.55}, ClassChoice("standard", 2, "default class")),
        (
            {"age_limit": 0.4, "exchange_rate": 0.3, "top_up_failed": 0.3},
            ClassChoice("bulk", 3, "intent age_limit (0.40)"),
        ),
        (
            {"age_limit": 0.7, "compromised_card": 0.25, "exchange_rate": 0.05},
            ClassChoice("urgent", 1, "urgent intents sum 0.25 ≥ 0.2"),
        ),
        ({"exchange_rate": 0.45, "age_limit": 0.55}, ClassChoice("bulk", 3, "intent age_limit (0.55)")),
    ],
)
def test_routes_most_urgent_first(probabilities: dict[str, float], expected: ClassChoice) -> None:
    assert choose_class(make_spec(), prediction(probabilities)) == expected


def test_sum_exactly_at_min_confidence_fires() -> None:
    spec = make_spec([{"priorityClass": "urgent", "intents": URGENT, "minConfidence": 0.25}])
    assert (
        choose_class(spec, prediction({"card_arrival": 0.75, "compromised_card": 0.25})).priority_class
        == "urgent"
    )


def test_routing_imports_no_model_runtime() -> None:
    """The pure routing module (and Prediction) load without onnxruntime or scikit-learn."""
    code = (
        "import sys, phoenix_operator.ml.routing; "
        "print(sorted(m for m in ('onnxruntime', 'sklearn', 'scipy', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_prediction_uses_default_class() -> None:
    assert choose_class(make_spec(), None) == ClassChoice("standard", 2, "default class (no prediction)")


def test_without_priority_classes_everything_is_default_level_zero() -> None:
    spec = make_spec(routes=[]).model_copy(update={"priority": None})
    choice = choose_class(spec, prediction({"lost_or_stolen_card": 1.0}))
    assert (choice.priority_class, choice.level) == ("default", 0)


def test_client_header_honoured_when_allowed() -> None:
    spec = make_spec(allow_client=True)
    choice = choose_class(spec, prediction({"lost_or_stolen_card": 1.0}), requested="bulk")
    assert choice == ClassChoice("bulk", 3, "client header")


def test_client_header_refused_when_not_allowed() -> None:
    with pytest.raises(UnknownPriorityClass, match="allowClientPriority is false"):
        choose_class(make_spec(), None, requested="urgent")


def test_unknown_client_class_names_the_classes() -> None:
    with pytest.raises(UnknownPriorityClass, match=r"'vip'.*'urgent', 'standard', 'bulk'"):
        choose_class(make_spec(allow_client=True), None, requested="vip")


def test_production_example_routes_urgent_intents() -> None:
    spec = production_spec()
    for intent in spec.gateway.routes[0].intents:
        assert choose_class(spec, Prediction(intent, 1.0, {intent: 1.0})).priority_class == "urgent"
    assert (
        choose_class(spec, Prediction("card_arrival", 1.0, {"card_arrival": 1.0})).priority_class
        == "standard"
    )


probability_vectors = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=len(LABELS), max_size=len(LABELS)
).filter(lambda xs: sum(xs) > 1e-6)


def _normalised(weights: list[float]) -> Prediction:
    total = sum(weights)
    return prediction({label: w / total for label, w in zip(LABELS, weights, strict=True)})


@settings(max_examples=300, deadline=None)
@given(weights=probability_vectors, which=st.sampled_from(URGENT), boost=st.floats(0.0, 10.0))
def test_raising_an_urgent_intent_never_makes_the_class_less_urgent(
    weights: list[float], which: str, boost: float
) -> None:
    spec = make_spec()
    before = choose_class(spec, _normalised(weights))
    raised = list(weights)
    raised[LABELS.index(which)] += boost
    after = choose_class(spec, _normalised(raised))
    assert after.level <= before.level


@settings(max_examples=300, deadline=None)
@given(weights=probability_vectors)
def test_choice_is_a_spec_class_and_urgent_when_urgent_mass_reaches_threshold(weights: list[float]) -> None:
    spec = make_spec()
    assert spec.priority is not None
    pred = _normalised(weights)
    choice = choose_class(spec, pred)
    assert (choice.priority_class, choice.level) in {(c.name, c.level) for c in spec.priority.classes}
    urgent_mass = sum(pred.probabilities[i] for i in URGENT)
    assert (choice.priority_class == "urgent") == (urgent_mass >= 0.2 or pred.intent in URGENT)
