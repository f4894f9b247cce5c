"""The deploy contract's shared logic: ModelRef, traffic and row checks, and the wait-until-ready loop."""

from __future__ import annotations

from typing import Any

import pytest

from hybridml.core.data import infer_schema
from hybridml.core.schema import FeatureSchema
from hybridml.deploy import Deployment, ModelRef, check_traffic_percent
from hybridml.deploy.contract import check_rows, check_split_percent
from hybridml.errors import InvalidInputError, NotFoundError, NotReadyError
from tests.contract.harness import FakeClock, ScriptedTarget

pytestmark = pytest.mark.unit


def test_wait_backs_off_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock, ready_on=7)
    deployment = target.wait_until_ready("m", timeout_s=60, first_poll_s=0.1, max_poll_s=0.5)
    assert deployment.ready and deployment.detail == "poll 7"
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
    assert len(target.polled_at) == 7


def test_default_polls_start_fast_and_cap_at_two_seconds() -> None:
    clock = FakeClock()
    ScriptedTarget(clock, ready_on=9).wait_until_ready("m", timeout_s=60)
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_a_budget_that_is_no_multiple_of_the_interval_is_kept_exactly() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock, ready_on=None)
    with pytest.raises(NotReadyError, match=r"^deployment 'm' not ready after 1s \(last status: poll 5\)$"):
        target.wait_until_ready("m", timeout_s=1.0, first_poll_s=0.1, max_poll_s=10)
    # 0.1 + 0.2 + 0.4 = 0.7; the next pause would be 0.8 but is cut to the 0.3 left; a last poll at 1.0 decides.
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.3])
    assert target.polled_at == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.0])
    assert clock.now == pytest.approx(1.0)


def test_slow_status_calls_count_against_the_budget() -> None:
    clock = FakeClock()
    target = ScriptedTarget(clock, ready_on=None, poll_cost_s=0.4)
    with pytest.raises(NotReadyError, match="not ready after 1s"):
        target.wait_until_ready("m", timeout_s=1.0, first_poll_s=0.1, max_poll_s=10)
    # Polls at 0 and 0.5 (0.4 of poll + 0.1 pause); at 0.9 the 0.2 pause is cut to the 0.1 left, so the last
    # poll starts at the deadline (and its own 0.4 is the only time spent past it).
    assert target.polled_at == pytest.approx([0.0, 0.5, 1.0])
    assert clock.sleeps == pytest.approx([0.1, 0.1])
    assert clock.now == pytest.approx(1.4)


def test_a_zero_budget_polls_once() -> None:
    clock = FakeClock()
    assert ScriptedTarget(clock, ready_on=1).wait_until_ready("m", timeout_s=0).ready
    with pytest.raises(NotReadyError, match="not ready after 0s"):
        ScriptedTarget(clock, ready_on=None).wait_until_ready("m", timeout_s=0)
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_s": -1}, "timeout must be zero or more seconds"),
        ({"timeout_s": float("nan")}, "timeout must be zero or more seconds"),
        ({"timeout_s": 1, "first_poll_s": 0}, "poll intervals must satisfy 0 < first <= max"),
        ({"timeout_s": 1, "first_poll_s": 2, "max_poll_s": 1}, "poll intervals must satisfy 0 < first <= max"),
    ],
)
def test_bad_wait_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ScriptedTarget(FakeClock(), ready_on=1).wait_until_ready("m", **kwargs)


def test_wait_for_unknown_name_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        ScriptedTarget(FakeClock(), ready_on=1).wait_until_ready("other", timeout_s=1)


@pytest.mark.parametrize("percent", [0, 101, -5, 50.5, True, "50"])
def test_traffic_percent_rejected(percent: object) -> None:
    with pytest.raises(InvalidInputError, match="traffic percent must be an integer from 1 to 100"):
        check_traffic_percent(percent)  # type: ignore[arg-type]


@pytest.mark.parametrize("percent", [1, 30, 100])
def test_traffic_percent_accepted(percent: int) -> None:
    assert check_traffic_percent(percent) == percent


@pytest.mark.parametrize("percent", [-1, 101, 2.0, False])
def test_split_percent_rejected(percent: object) -> None:
    with pytest.raises(InvalidInputError, match="traffic percent must be an integer from 0 to 100"):
        check_split_percent(percent)  # type: ignore[arg-type]


@pytest.mark.parametrize("percent", [0, 100])
def test_split_percent_bounds_accepted(percent: int) -> None:
    assert check_split_percent(percent) == percent


@pytest.mark.parametrize(
    ("rows", "protocol", "message"),
    [
        ([], "v2", "non-empty list of rows"),
        ("a,b", "v2", "non-empty list of rows"),
        ([{"a": 1}, [1]], "v2", "row 1 must be an object"),
        ([{"a": 1}], "v3", "unknown protocol 'v3'"),
    ],
)
def test_invoke_rows_checked(rows: Any, protocol: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_rows(rows, protocol)


def test_deployment_is_frozen_and_shadow_defaults_to_none() -> None:
    deployment = Deployment("m", "local", "http://x", "1", "2", 30, True, "ok")
    assert deployment.shadow_version is None
    with pytest.raises(AttributeError):
        deployment.ready = False  # type: ignore[misc]


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    import pandas as pd

    return infer_schema(pd.DataFrame({"a": [1.5, 2.5, 3.5] * 10, "y": ["n", "p"] * 15}), "y")


def test_model_ref_keeps_an_int_version_as_its_string(schema: FeatureSchema) -> None:
    ref = ModelRef("m", 3, "file:///x", schema)  # type: ignore[arg-type]
    assert (ref.name, ref.version, ref.artifact_uri, ref.schema, ref.profile) == ("m", "3", "file:///x", schema, None)


@pytest.mark.parametrize(
    ("uri", "schema_value", "message"),
    [
        ("", None, "artifact_uri must be a non-empty URI"),
        ("  ", None, "artifact_uri must be a non-empty URI"),
        ("file:///x", {"features": []}, "schema must be a FeatureSchema"),
    ],
)
def test_model_ref_refuses_a_missing_uri_or_schema(
    schema: FeatureSchema, uri: str, schema_value: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"model reference 'm': {message}"):
        ModelRef("m", "1", uri, schema_value if schema_value is not None else schema)
