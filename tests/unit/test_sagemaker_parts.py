"""Pure parts of the SageMaker target: resource names within SageMaker's limits, and reading scores."""

from __future__ import annotations

import re

import pytest

from hybridml.adapters.aws import THROTTLING_CODES, is_missing, mapped
from hybridml.deploy.sagemaker import parse_scores
from hybridml.deploy.sagemaker.naming import config_name, digest, model_name, tags
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@pytest.mark.parametrize("version", ["1", "12345678901234567890", "other-model-7", "v1.2_rc", "..."])
def test_resource_names_fit_sagemaker_for_the_longest_model_name(version: str) -> None:
    endpoint = "a" * 40
    name = model_name(endpoint, version, {"x": 1})
    assert SAGEMAKER_NAME.match(name) and len(name) <= 63
    assert SAGEMAKER_NAME.match(config_name(endpoint, {"variants": {}})) and len(config_name(endpoint, {})) <= 63
    assert model_name(endpoint, version, {"x": 1}) == name  # derived, never random
    assert model_name(endpoint, version, {"x": 2}) != name


def test_digests_ignore_key_order_and_tags_are_cut() -> None:
    assert digest({"a": 1, "b": 2}, 12) == digest({"b": 2, "a": 1}, 12)
    assert tags({"k": "v" * 300, "gone": None}) == [{"Key": "k", "Value": "v" * 256}]


@pytest.mark.parametrize(
    ("body", "content_type", "scores"),
    [
        (b'{"predictions": [0.1, 0.9]}', "application/json", [0.1, 0.9]),
        (b'{"predictions": [[0.9, 0.1], [0.2, 0.8]]}', "application/json", [0.1, 0.8]),
        (b'{"predictions": [{"score": 0.1}, {"probability": 0.9}]}', "application/json", [0.1, 0.9]),
        (b"[0.1, 0.9]", "application/json", [0.1, 0.9]),
        (b"0.1\n0.9\n", "text/csv", [0.1, 0.9]),
        (b"0.1,0.9", "text/csv", [0.1, 0.9]),
    ],
)
def test_scores_are_read_from_json_and_csv(body: bytes, content_type: str, scores: list[float]) -> None:
    assert parse_scores(body, content_type, 2) == scores


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"0.1", r"^endpoint answered 1 scores for 2 rows$"),
        (b"a,b", r"^endpoint answered text/csv that holds no scores$"),
        (b'{"error": "x"}', r"^endpoint answered JSON without a predictions list$"),
        (b'{"predictions": [true, 0.5]}', r"^endpoint answered a prediction that is not a score: True$"),
    ],
)
def test_answers_without_one_score_per_row_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(NotReadyError, match=message):
        parse_scores(body, "text/csv", 2)


def _error(code: str, message: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, "DescribeEndpoint")


def test_errors_are_mapped_by_code_and_missing_only_for_lookups() -> None:
    assert is_missing(_error("ValidationException", "Could not find endpoint 'x'."))
    assert not is_missing(_error("ValidationException", "Value 'ml.bogus' is not valid"))
    assert isinstance(mapped(_error("ValidationException", "Image does not exist"), "CreateModel"), InvalidInputError)
    assert isinstance(mapped(_error("ResourceNotFound", "gone"), "X"), NotFoundError)
    assert isinstance(mapped(_error("ResourceInUse", "busy"), "X"), ConflictError)
    assert isinstance(mapped(_error("InternalFailure", "oops"), "X"), NotReadyError)
    assert str(mapped(_error("ResourceInUse", "busy  \n now"), "DeleteModel")) == (
        "SageMaker DeleteModel failed: ResourceInUse: busy now"
    )
    assert {"ThrottlingException", "TooManyRequestsException"} <= THROTTLING_CODES
    assert "ValidationException" not in THROTTLING_CODES
