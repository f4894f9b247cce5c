"""Credentials never leave in what hybridml logs or prints."""

from __future__ import annotations

import pytest

from hybridml.core.secrets import redact


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql+psycopg2://optuna:pw@db:5432/optuna", "postgresql+psycopg2://optuna:***@db:5432/optuna"),
        ("http://bob:secret@127.0.0.1:5000", "http://bob:***@127.0.0.1:5000"),
        ("https://u:p%40ss@mlflow.example/", "https://u:***@mlflow.example/"),
        ("http://bob@host", "http://bob@host"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
        ("", ""),
        ("http://u:p@host:notaport/", "<unparsable URI>"),
    ],
)
def test_passwords_are_redacted(uri: str, shown: str) -> None:
    assert redact(uri) == shown


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql:/alice:s3cret@db/optuna", "postgresql:/alice:***@db/optuna"),  # one slash: no netloc
        ("alice:s3cret@db/optuna", "alice:***@db/optuna"),  # no scheme
        ("sqlite:///tmp/optuna.db", "sqlite:///tmp/optuna.db"),  # nothing to hide: unchanged
        ("http://mlflow:5000/a@b", "http://mlflow:5000/a@b"),  # an @ in a path is not a credential
    ],
)
def test_credentials_outside_a_netloc_are_hidden_too(uri: str, shown: str) -> None:
    assert redact(uri) == shown


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://db/optuna?user=o&password=s3cret", "postgresql://db/optuna?user=o&password=***"),
        (
            "postgresql://db/optuna?Password=s3cret&sslmode=require",
            "postgresql://db/optuna?Password=***&sslmode=require",
        ),
        ("http://mlflow:5000/api?token=abc#frag", "http://mlflow:5000/api?token=***#frag"),
        ("postgresql://u:pw@db/x?pwd=a;sslpassword=b", "postgresql://u:***@db/x?pwd=***;sslpassword=***"),
        ("postgresql://db/x?passwordless=1&mypassword=2", "postgresql://db/x?passwordless=1&mypassword=2"),
        ("postgresql://db/x?password=", "postgresql://db/x?password=***"),
    ],
)
def test_secrets_in_the_query_string_are_hidden(uri: str, shown: str) -> None:
    assert redact(uri) == shown
