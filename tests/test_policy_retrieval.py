"""Retrieval's share of TTFT: the RetrievalSlow verdict and breaches retrieval explains (pure).

The per-class TTFT is the gateway's (what the client sees: classify + embed + search + Triton's
first token); Triton's own TTFT has no retrieval in it. A class breach that only retrieval's
excess over its share causes must not order Triton replicas: they cannot make retrieval faster.
"""

from __future__ import annotations

from typing import Any

import pytest

from phoenix_operator.control.policy import PolicyState, check_retrieval, decide
from policy_cases import make_fleet, make_obs, make_params


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("retrieval", "target", "share", "slow", "reason", "excess", "message"),
    [
        (
            0.92,
            3.0,
            0.25,
            True,
            "RetrievalOverShare",
            0.17,
            "retrieval p95 0.92 s is 31 % of the 3 s TTFT target (limit 25 %)",
        ),
        (
            0.5,
            3.0,
            0.25,
            False,
            "RetrievalWithinShare",
            0.0,
            "retrieval p95 0.50 s is 17 % of the 3 s TTFT target (limit 25 %)",
        ),
        # At the limit is within it.
        (0.75, 3.0, 0.25, False, "RetrievalWithinShare", 0.0, "is 25 % of the 3 s TTFT target (limit 25 %)"),
        (0.3, 1.5, 0.1, True, "RetrievalOverShare", 0.15, "is 20 % of the 1.5 s TTFT target (limit 10 %)"),
        (None, 3.0, 0.25, None, "NoRetrievalData", 0.0, "retrieval p95 unknown (no requests)"),
        (0.92, 3.0, None, None, "NoGateway", 0.0, "gateway is disabled"),
    ],
)
def test_retrieval_verdict(
    retrieval: float | None,
    target: float,
    share: float | None,
    slow: bool | None,
    reason: str,
    excess: float,
    message: str,
) -> None:
    check = check_retrieval(retrieval, target, share, missing_reason="no requests")
    assert check.slow is slow
    assert check.reason == reason
    assert check.excess_s == pytest.approx(excess)
    assert message in check.message


def test_the_slow_stage_is_named_and_triton_stages_are_not_retrieval() -> None:
    stages = {"classify": 0.004, "embed": 0.08, "search": 0.85, "first_token": 2.1}
    slow = check_retrieval(0.92, 3.0, 0.25, stages)
    assert "search p95 0.85 s, embed p95 0.08 s: the search stage is the slow one" in slow.message
    assert "first_token" not in slow.message and "classify" not in slow.message
    fine = check_retrieval(0.2, 3.0, 0.25, {"embed": 0.15, "search": 0.05})
    assert fine.slow is False and "slow one" not in fine.message
    assert "embed p95 0.15 s, search p95 0.05 s" in fine.message


# --------------------------------------------------------------------------------------------
# The policy: a class breach retrieval explains orders no replica
# --------------------------------------------------------------------------------------------
#: Load that 4 replicas carry (10 req/s each at 90 %): only TTFT feedback could scale up.
FLEET = 4


def _decide(retrieval: float | None, by_class: dict[str, float], share: float | None = 0.25) -> Any:
    params = make_params(retrieval_ttft_share=share, tune_batching=False)
    obs = make_obs(ttft=0.3, rate=30.0, by_class=by_class, retrieval_p95_s=retrieval)
    decision, _ = decide(params, obs, make_fleet(FLEET), PolicyState(), now=15.0)
    return decision


@pytest.mark.parametrize(
    ("case", "retrieval", "by_class", "share", "scales_up", "says"),
    [
        # 3.1 s against 3 s, retrieval 0.92 s (0.17 s over its 0.75 s): 2.93 s is Triton's doing.
        ("explained", 0.92, {"urgent": 0.4, "standard": 3.1, "bulk": 0.5}, 0.25, False, "retrieval"),
        ("no retrieval figure", None, {"urgent": 0.4, "standard": 3.1, "bulk": 0.5}, 0.25, True, "standard"),
        # Retrieval within its share: the breach is Triton's to fix.
        ("retrieval fast", 0.5, {"urgent": 0.4, "standard": 3.1, "bulk": 0.5}, 0.25, True, "standard"),
        # Retrieval slow, but 3.5 - 0.17 s is still over: Triton is over its own budget too.
        ("partly explained", 0.92, {"urgent": 0.4, "standard": 3.5, "bulk": 0.5}, 0.25, True, "standard"),
        # No gateway: nothing to take out.
        ("no gateway", 0.92, {"urgent": 0.4, "standard": 3.1, "bulk": 0.5}, None, True, "standard"),
        # The most urgent class (1.5 s target): 1.6 s with 0.17 s of retrieval excess.
        ("urgent explained", 0.92, {"urgent": 1.6, "standard": 1.0, "bulk": 0.5}, 0.25, False, "urgent"),
        ("urgent not explained", 0.4, {"urgent": 1.6, "standard": 1.0, "bulk": 0.5}, 0.25, True, "urgent"),
    ],
)
def test_a_breach_retrieval_explains_orders_no_replica(
    case: str,
    retrieval: float | None,
    by_class: dict[str, float],
    share: float | None,
    scales_up: bool,
    says: str,
) -> None:
    decision = _decide(retrieval, by_class, share)
    if scales_up:
        assert decision.action == "scale-up" and decision.replicas == FLEET + 1, (case, decision)
    else:
        assert decision.action == "hold" and decision.replicas is None, (case, decision)
        assert "not scaling Triton" in decision.reason and "retrieval p95 0.92 s" in decision.reason
    assert says in decision.reason, (case, decision.reason)


def test_retrieval_figures_are_quoted_in_the_decision() -> None:
    decision = _decide(0.92, {"urgent": 0.4, "standard": 3.1, "bulk": 0.5})
    assert decision.metrics["retrieval_p95_s"] == pytest.approx(0.92)
    assert decision.metrics["retrieval_excess_s"] == pytest.approx(0.17)
    without = _decide(None, {"urgent": 0.4, "standard": 1.0, "bulk": 0.5})
    assert "retrieval_p95_s" not in without.metrics


def test_a_scale_up_for_load_still_says_a_breach_was_retrievals() -> None:
    """A decision made for another cause keeps the retrieval note (the user sees both)."""
    params = make_params(retrieval_ttft_share=0.25, tune_batching=False)
    obs = make_obs(
        ttft=0.3, rate=80.0, by_class={"urgent": 0.4, "standard": 3.1, "bulk": 0.5}, retrieval_p95_s=0.92
    )
    decision, _ = decide(params, obs, make_fleet(FLEET), PolicyState(), now=15.0)
    assert decision.action == "scale-up"
    assert "not scaling Triton for it" in decision.reason and "load" in decision.reason
