"""Client-side validation (pydantic) of the invalid-object table; the API server runs the same
table in tests/test_reconciler_integration.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api_cases import INVALID_CASES, Case, invalid_doc, valid_doc
from phoenix_operator.api.models import PhoenixDeployment


def test_valid_document_parses_with_defaults() -> None:
    pd = PhoenixDeployment.model_validate(valid_doc())
    assert pd.spec.model.instance_count == 1
    assert pd.spec.triton.gpus_per_replica == 1
    assert pd.spec.autoscaling.scale_down_stabilization_seconds == 300
    assert [t.key for t in pd.spec.triton.tolerations] == ["nvidia.com/gpu"]


def test_table_is_large_enough() -> None:
    assert len(INVALID_CASES) >= 15
    assert len({c.id for c in INVALID_CASES}) == len(INVALID_CASES)


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_invalid_is_rejected_naming_the_field(case: Case) -> None:
    with pytest.raises(ValidationError) as info:
        PhoenixDeployment.model_validate(invalid_doc(case))
    described = [".".join(str(p) for p in err["loc"]) + ": " + err["msg"] for err in info.value.errors()]
    assert any(case.field in line for line in described), described
