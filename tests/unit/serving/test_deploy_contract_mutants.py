"""Deploy contract behaviour the mutation run (issue 12) found unasserted: messages, a bool version, equal polls."""

from __future__ import annotations

import pandas as pd
import pytest

from hybridml.core.data import infer_schema
from hybridml.core.schema import FeatureSchema
from hybridml.deploy import ModelRef
from hybridml.deploy.contract import check_rows
from hybridml.errors import InvalidInputError
from tests.contract.harness import FakeClock, ScriptedTarget

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return infer_schema(pd.DataFrame({"a": [1.5, 2.5, 3.5] * 10, "y": ["n", "p"] * 15}), "y")


def test_unknown_protocol_message_lists_the_choices() -> None:
    with pytest.raises(InvalidInputError, match=r"^unknown protocol 'v3' \(choose from v1, v2\)$"):
        check_rows([{"a": 1}], "v3")


@pytest.mark.parametrize("rows", [[], (), b"ab", {"a": 1}])
def test_no_rows_message_is_one_exact_line(rows: object) -> None:
    with pytest.raises(InvalidInputError, match=r"^invoke needs a non-empty list of rows$"):
        check_rows(rows, "v1")


def test_valid_rows_pass_for_both_protocols() -> None:
    for protocol in ("v1", "v2"):
        assert check_rows(({"a": 1}, {"a": None}), protocol) is None


@pytest.mark.parametrize("version", ["7", "v1.2"])
def test_a_string_version_is_kept_as_given(schema: FeatureSchema, version: str) -> None:
    assert ModelRef("m", version, "file:///x", schema).version == version


def test_a_bool_version_is_not_taken_for_an_int(schema: FeatureSchema) -> None:
    # bool is an int subclass; the int-to-label rule must not turn True into the label "True" (or "1").
    ref = ModelRef("m", True, "file:///x", schema)
    assert ref.version is True


def test_first_poll_equal_to_max_poll_is_accepted() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock, ready_on=4)
    deployment = target.wait_until_ready("m", timeout_s=10, first_poll_s=0.5, max_poll_s=0.5)
    assert deployment.ready and deployment.detail == "poll 4"
    assert clock.sleeps == pytest.approx([0.5, 0.5, 0.5])
