"""The registry's reads (registry/_mlflow/reads.py), what its parts share (backend.py), the object over them
(registry.py) and the value types (protocol.py), driven in process against an in-memory MLflow client that pages
its searches: every field of every record read back, paging, every refusal of a name, key, version or reference,
the retry and hook behaviour of the backend, and the arguments the registry hands on (issue 12: only integration
tests, some in server processes that mutants never reach, exercised them)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

from hybridml.adapters import mlflow_client
from hybridml.core import data, model
from hybridml.core.approval import APPROVED, PENDING, REJECTED, Decision
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.registry._mlflow import backend as backend_module
from hybridml.registry._mlflow import reads, retries
from hybridml.registry._mlflow.backend import (
    BRANCH_TAG,
    DATA_HASH_TAG,
    MODEL_URI_TAG,
    PIPELINE_RUN_ID_TAG,
    ROC_AUC_TAG,
    STATUS_TAG,
    Backend,
    check_key,
    check_name,
    name_matches,
    tag_value,
    version_number,
)
from hybridml.registry._mlflow.history import HISTORY_PREFIX, decode, encode, iso_utc
from hybridml.registry._mlflow.lock import claims_of
from hybridml.registry._mlflow.registry import Registry
from hybridml.registry.protocol import CHAMPION, HistoryEvent, ModelSummary, VersionInfo
from tests.unit.test_registry_mutants import busy, race

pytestmark = pytest.mark.unit

EPOCH = 1_700_000_000.0
# What MLflow's stores refuse above (mlflow.store.model_registry): a larger page size is an error there too.
MAX_MODELS_PAGE = 1000
MAX_VERSIONS_PAGE = 200_000


@pytest.fixture(autouse=True)
def widest_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """random.uniform returns the top of its range (retry sleeps are then exact)."""
    monkeypatch.setattr(retries.random, "uniform", lambda low, high: high)


class Page(list[Any]):
    token: str | None


def paginate(items: list[Any], token: str | None, size: int) -> Page:
    start = int(token) if token else 0
    page = Page(items[start : start + size])
    page.token = str(start + size) if start + size < len(items) else None
    return page


class Store:
    """An MLflow registry client on dicts, for several models; searches come in pages of ``page_size``.

    Every search call is logged with its page token; writes are logged in order; ``inject[op]`` holds
    exceptions that call raises first, one per call.
    """

    def __init__(self, page_size: int = 2) -> None:
        self.page_size = page_size
        self.models: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[int, dict[str, Any]]] = {}
        self.log: list[tuple[Any, ...]] = []
        self.inject: dict[str, list[BaseException]] = {}
        self.download_dirs: dict[tuple[str, str], str] = {}
        self.searches = 0

    def _searched(self) -> None:
        # A paging loop that never ends (a token dropped or never advanced) fails here, not by a timeout.
        self.searches += 1
        assert self.searches <= 50, "paging does not end"

    # ------------------------------------------------------------------ building the store

    def add_model(self, name: str, *, description: str | None = None, tags: dict[str, str] | None = None) -> None:
        self.models[name] = {"tags": dict(tags or {}), "aliases": {}, "description": description}
        self.versions[name] = {}

    def add_version(self, name: str, number: int, tags: dict[str, str] | None = None, **fields: Any) -> None:
        if name not in self.models:
            self.add_model(name)
        self.versions[name][number] = {"tags": dict(tags or {}), **fields}

    def _fail(self, op: str) -> None:
        if self.inject.get(op):
            raise self.inject[op].pop(0)

    def _mv(self, name: str, number: int, *, with_aliases: bool = True) -> SimpleNamespace:
        stored = self.versions[name][number]
        mv = SimpleNamespace(
            name=name,
            version=str(number),
            tags=dict(stored["tags"]),
            run_id=stored.get("run_id", "run-1"),
            source=stored.get("source", "s3://b/m"),
            # MLflow lists a version's aliases with it, in no promised order.
            aliases=[a for a, v in self.models[name]["aliases"].items() if v == str(number)] if with_aliases else [],
            creation_timestamp=stored.get("creation_timestamp", 7),
        )
        if "model_id" in stored:
            mv.model_id = stored["model_id"]
        return mv

    # ------------------------------------------------------------------ reads

    def get_registered_model(self, name: str) -> SimpleNamespace:
        self._fail("get_registered_model")
        if name not in self.models:
            raise MlflowException(f"Registered Model with name={name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
        m = self.models[name]
        return SimpleNamespace(
            name=name, tags=dict(m["tags"]), aliases=dict(m["aliases"]), description=m["description"]
        )

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        self._fail("get_model_version")
        assert isinstance(version, str)
        if int(version) not in self.versions.get(name, {}):
            raise MlflowException(f"Model Version {version} not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return self._mv(name, int(version))

    def search_registered_models(self, max_results: int, page_token: str | None) -> Page:
        self._searched()
        self._fail("search_registered_models")
        if max_results > MAX_MODELS_PAGE:
            raise MlflowException(f"max_results {max_results} too large", error_code=INVALID_PARAMETER_VALUE)
        self.log.append(("search-models", page_token))
        # Not in name order: the listing sorts.
        found = [self.get_registered_model(n) for n in sorted(self.models, reverse=True)]
        return paginate(found, page_token, self.page_size)

    def search_model_versions(self, filter_string: str, max_results: int, page_token: str | None) -> Page:
        self._searched()
        self._fail("search_model_versions")
        if max_results > MAX_VERSIONS_PAGE:
            raise MlflowException(f"max_results {max_results} too large", error_code=INVALID_PARAMETER_VALUE)
        match = re.fullmatch(r"name = '([^']*)'", filter_string)
        assert match is not None, filter_string
        name = match.group(1)
        self.log.append(("search-versions", name, page_token))
        # Newest first and without aliases, as MLflow's SQL store answers a search: the listing sorts and looks the
        # aliases up in the model's alias map.
        found = [self._mv(name, n, with_aliases=False) for n in sorted(self.versions.get(name, {}), reverse=True)]
        return paginate(found, page_token, self.page_size)

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        self._fail("get_model_version_download_uri")
        return self.download_dirs[(name, version)]

    # ------------------------------------------------------------------ writes

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._fail("set_registered_model_tag")
        self.log.append(("model-tag", name, key, value))
        self.models[name]["tags"][key] = value

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self.log.append(("delete-model-tag", name, key))
        self.models[name]["tags"].pop(key, None)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._fail("set_model_version_tag")
        assert isinstance(version, str)
        self.log.append(("version-tag", name, version, key, value))
        self.versions[name][int(version)]["tags"][key] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        assert isinstance(version, str)
        self.log.append(("set-alias", name, alias, version))
        self.models[name]["aliases"][alias] = version

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.log.append(("delete-alias", name, alias))
        del self.models[name]["aliases"][alias]

    def create_registered_model(self, name: str) -> None:
        self.log.append(("create-model", name))
        self.add_model(name)

    def create_model_version(self, name: str, source: str, **kw: Any) -> SimpleNamespace:
        number = max(self.versions[name], default=0) + 1
        self.add_version(name, number, dict(kw["tags"]), run_id=kw.get("run_id"), source=source)
        self.log.append(("create-version", name, number))
        return self._mv(name, number)


def backend(store: Store, **kw: Any) -> Backend:
    kw.setdefault("sleep", sleeps_of(store))
    kw.setdefault("attempts", 3)
    return Backend(tracking_uri="http://reg", user="svc", client=store, clock=lambda: EPOCH, **kw)  # type: ignore[arg-type]


def sleeps_of(store: Store) -> Any:
    def sleep(seconds: float) -> None:
        store.log.append(("sleep", seconds))

    return sleep


def history_tag(action: str, version: int | None, detail: str, *, at: float, actor: str = "ann") -> tuple[str, str]:
    return encode(clock_s=at, actor=actor, action=action, version=version, detail=detail, reason=f"why {detail}")


def event(action: str, version: int | None, detail: str, *, at: float, actor: str = "ann") -> HistoryEvent:
    return HistoryEvent(iso_utc(at), actor, action, "m", version, detail, f"why {detail}")


def refusal(error: type[Exception], call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# ------------------------------------------------------------------ reads: one version, every field


FULL_TAGS = {
    STATUS_TAG: APPROVED,
    ROC_AUC_TAG: "0.875",
    DATA_HASH_TAG: "sha256:abc",
    PIPELINE_RUN_ID_TAG: "kfp-7",
    BRANCH_TAG: "hpo",
    MODEL_URI_TAG: "models:/m-0a1b",
    "custom": "x",
}


def test_a_version_is_read_back_with_every_field_and_history_tags_left_out() -> None:
    store = Store()
    history_key, history_value = history_tag("registered", 2, "", at=EPOCH)
    store.add_version("m", 2, {**FULL_TAGS, history_key: history_value}, run_id="run-9", creation_timestamp=1234)
    store.models["m"]["aliases"] = {"staging": "2", CHAMPION: "2"}
    info = reads.get_version(backend(store), "m", 2)
    assert info == VersionInfo(
        name="m",
        version=2,
        status=APPROVED,
        roc_auc=0.875,
        data_hash="sha256:abc",
        run_id="run-9",
        pipeline_run_id="kfp-7",
        branch="hpo",
        source="s3://b/m",
        aliases=(CHAMPION, "staging"),
        tags=FULL_TAGS,
        created_at=1234,
        model_id="m-0a1b",
    )
    assert type(info.version) is int and type(info.created_at) is int
    assert info.ref == "m/2" and info.is_champion


def test_a_bare_version_reads_as_pending_with_empty_lineage() -> None:
    store = Store()
    store.add_version("m", 1, run_id="", source=None, creation_timestamp=None)
    info = reads.get_version(backend(store), "m", "1")
    assert info == VersionInfo(
        name="m",
        version=1,
        status=PENDING,
        roc_auc=None,
        data_hash=None,
        run_id=None,
        pipeline_run_id=None,
        branch=None,
        source="",
        aliases=(),
        tags={},
        created_at=0,
        model_id=None,
    )
    assert not info.is_champion


@pytest.mark.parametrize(("text", "expected"), [("abc", None), ("", None), ("1e-3", 0.001), (" 0.5 ", 0.5)])
def test_a_roc_auc_tag_that_is_not_a_number_reads_as_none(text: str, expected: float | None) -> None:
    store = Store()
    store.add_version("m", 1, {ROC_AUC_TAG: text})
    assert reads.get_version(backend(store), "m", 1).roc_auc == expected


def test_the_model_id_of_the_version_wins_over_its_uri_tag() -> None:
    store = Store()
    store.add_version("m", 1, {MODEL_URI_TAG: "models:/m-aaaa"}, model_id="m-bbbb")
    store.add_version("m", 2, {MODEL_URI_TAG: "models:/m-aaaa"}, model_id=None)
    b = backend(store)
    assert reads.get_version(b, "m", 1).model_id == "m-bbbb"
    assert reads.get_version(b, "m", 2).model_id == "m-aaaa"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/m-0123456789abcdef", "m-0123456789abcdef"),
        ("models:/m-ABC", None),
        ("models:/m-", None),
        ("models:/m-12/extra", None),
        ("xmodels:/m-12", None),
        ("models:/m/1", None),
        ("", None),
        (None, None),
    ],
)
def test_model_id_of_takes_only_a_whole_logged_model_uri(uri: str | None, expected: str | None) -> None:
    assert reads.model_id_of(uri) == expected


def test_a_missing_model_or_version_is_not_found_naming_it_with_the_cause_chained() -> None:
    store = Store()
    store.add_version("m", 1)
    b = backend(store)
    with pytest.raises(NotFoundError) as caught:
        reads.get_version(b, "nope", 1)
    assert str(caught.value) == "model 'nope' not found"
    assert isinstance(caught.value.__cause__, MlflowException)
    with pytest.raises(NotFoundError) as caught:
        reads.get_version(b, "m", 3)
    assert str(caught.value) == "model 'm' has no version 3"
    assert isinstance(caught.value.__cause__, MlflowException)
    assert "Model Version 3 not found" in str(caught.value.__cause__)


# ------------------------------------------------------------------ resolve


def resolver() -> Backend:
    store = Store()
    for n in (1, 3, 2):  # created out of order: "latest" is the highest number, not the last listed
        store.add_version("m", n, {STATUS_TAG: APPROVED if n == 2 else PENDING})
    store.models["m"]["aliases"] = {CHAMPION: "2", "staging": "1"}
    store.add_model("empty")
    return backend(store)


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        ("m@champion", 2),
        ("m@staging", 1),
        ("models:/m@champion", 2),
        ("  m@champion\n", 2),
        ("m/3", 3),
        ("m/1", 1),
        ("models:/m/1", 1),
        (" m/1 ", 1),
        ("m", 3),
        ("models:/m", 3),
        (" m ", 3),
    ],
)
def test_resolve_accepts_every_form_of_reference(ref: str, version: int) -> None:
    info = reads.resolve(resolver(), ref)
    assert (info.name, info.version) == ("m", version)


def test_a_version_resolved_by_name_carries_its_aliases() -> None:
    assert reads.resolve(resolver(), "m/2").aliases == (CHAMPION,)
    assert reads.resolve(resolver(), "m@champion").is_champion


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("m@", "NAME@ALIAS"),
        ("m@a@b", "NAME@ALIAS"),
        ("m@a/b", "NAME@ALIAS"),
        ("@champion", "NAME@ALIAS"),
        ("m:x@champion", "NAME@ALIAS"),
        ("m/", "NAME/VERSION"),
        ("m/x", "NAME/VERSION"),
        ("m/-1", "NAME/VERSION"),
        ("/1", "NAME/VERSION"),
        ("m x/1", None),
        ("m:1", "NAME, NAME/VERSION or NAME@ALIAS"),
        ("", "NAME, NAME/VERSION or NAME@ALIAS"),
        ("'m'", "NAME, NAME/VERSION or NAME@ALIAS"),
    ],
)
def test_malformed_references_are_refused_naming_the_expected_form(ref: str, expected: str | None) -> None:
    b = resolver()
    if expected is None:  # a name with a space inside: MLflow can look it up; there is no such model
        assert refusal(NotFoundError, reads.resolve, b, ref) == "model 'm x' not found"
        return
    message = refusal(InvalidInputError, reads.resolve, b, ref)
    assert message == f"malformed model reference {ref!r} (expected {expected})"


def test_missing_aliases_models_and_versions_are_not_found_naming_them() -> None:
    b = resolver()
    assert refusal(NotFoundError, reads.resolve, b, "m@prod") == "model 'm' has no alias 'prod'"
    assert refusal(NotFoundError, reads.resolve, b, "empty") == "model 'empty' has no versions"
    assert refusal(NotFoundError, reads.resolve, b, "m/9") == "model 'm' has no version 9"
    assert refusal(NotFoundError, reads.resolve, b, "x@champion") == "model 'x' not found"
    assert refusal(NotFoundError, reads.resolve, b, "x") == "model 'x' not found"


# ------------------------------------------------------------------ listings


def test_list_models_reads_every_page_and_every_field_sorted_by_name() -> None:
    store = Store(page_size=2)
    store.add_model("c-empty", description=None)
    for n in (1, 4, 2):
        store.add_version("b", n)
    store.models["b"]["aliases"] = {CHAMPION: "4", "old": "1"}
    store.models["b"]["description"] = "the b model"
    store.add_version("a", 1)
    store.add_version("d", 1)
    store.add_version("e", 1)
    listed = reads.list_models(backend(store))
    assert listed == [
        ModelSummary(name="a", latest_version=1, n_versions=1, aliases={}, description=""),
        ModelSummary(
            name="b", latest_version=4, n_versions=3, aliases={CHAMPION: 4, "old": 1}, description="the b model"
        ),
        ModelSummary(name="c-empty", latest_version=None, n_versions=0, aliases={}, description=""),
        ModelSummary(name="d", latest_version=1, n_versions=1, aliases={}, description=""),
        ModelSummary(name="e", latest_version=1, n_versions=1, aliases={}, description=""),
    ]
    assert all(type(v) is int for s in listed for v in s.aliases.values())
    # Five models in pages of two: three pages, each asked for with the token the one before returned.
    assert [e for e in store.log if e[0] == "search-models"] == [
        ("search-models", None),
        ("search-models", "2"),
        ("search-models", "4"),
    ]


def test_list_models_of_an_empty_registry_is_empty() -> None:
    assert reads.list_models(backend(Store())) == []


def test_list_versions_reads_every_page_oldest_first_with_each_versions_aliases() -> None:
    store = Store(page_size=2)
    for n in (5, 1, 3, 2, 4):
        store.add_version("m", n)
    store.models["m"]["aliases"] = {CHAMPION: "3", "b-alias": "3", "a-alias": "3", "old": "1"}
    infos = reads.list_versions(backend(store), "m")
    assert [(i.version, i.aliases) for i in infos] == [
        (1, ("old",)),
        (2, ()),
        (3, ("a-alias", "b-alias", CHAMPION)),
        (4, ()),
        (5, ()),
    ]
    assert [e for e in store.log if e[0] == "search-versions"] == [
        ("search-versions", "m", None),
        ("search-versions", "m", "2"),
        ("search-versions", "m", "4"),
    ]


def test_listing_the_versions_of_a_missing_model_is_not_found() -> None:
    assert refusal(NotFoundError, reads.list_versions, backend(Store()), "nope") == "model 'nope' not found"


def test_aliases_and_champion() -> None:
    store = Store()
    store.add_version("m", 1, {STATUS_TAG: APPROVED})
    store.add_version("m", 2)
    b = backend(store)
    assert reads.aliases(b, "m") == {}
    assert reads.aliases_by_version(b, "m") == {}
    assert reads.champion(b, "m") is None
    store.models["m"]["aliases"] = {CHAMPION: "1", "z": "2", "a": "2"}
    assert reads.aliases(b, "m") == {CHAMPION: 1, "z": 2, "a": 2}
    assert reads.aliases_by_version(b, "m") == {1: (CHAMPION,), 2: ("a", "z")}
    champion = reads.champion(b, "m")
    assert champion is not None and (champion.version, champion.status, champion.aliases) == (1, APPROVED, (CHAMPION,))
    assert refusal(NotFoundError, reads.champion, b, "nope") == "model 'nope' not found"


# ------------------------------------------------------------------ history


def history_store() -> Store:
    store = Store(page_size=1)
    store.add_model("m")
    store.add_version("m", 1)
    store.add_version("m", 2)
    store.add_version("m", 3)
    # Written in time order: an event's key orders it, and keys only grow within a process (history.event_key).
    written = [
        (1, history_tag("registered", 1, "", at=EPOCH + 1)),
        (2, history_tag("registered", 2, "", at=EPOCH + 2)),
        (3, history_tag("registered", 3, "", at=EPOCH + 3, actor="bob")),
        (1, history_tag("status", 1, "a -> b", at=EPOCH + 4)),
        (None, history_tag("alias", None, "champion: none -> 1", at=EPOCH + 5)),
        (None, history_tag("alias", None, "champion: 1 -> 2", at=EPOCH + 6)),
        (None, history_tag("alias", None, "staging: 12 -> 21", at=EPOCH + 7)),
    ]
    for number, (key, value) in written:
        tags = store.models["m"]["tags"] if number is None else store.versions["m"][number]["tags"]
        tags[key] = value
    store.models["m"]["tags"]["hybridml.lock.abc"] = '{"holder": "x"}'  # not history
    return store


def test_the_model_history_joins_model_and_every_version_oldest_first() -> None:
    store = history_store()
    assert reads.events(backend(store), "m") == [
        event("registered", 1, "", at=EPOCH + 1),
        event("registered", 2, "", at=EPOCH + 2),
        event("registered", 3, "", at=EPOCH + 3, actor="bob"),
        event("status", 1, "a -> b", at=EPOCH + 4),
        event("alias", None, "champion: none -> 1", at=EPOCH + 5),
        event("alias", None, "champion: 1 -> 2", at=EPOCH + 6),
        event("alias", None, "staging: 12 -> 21", at=EPOCH + 7),
    ]
    # Versions listed in pages of one: every page read.
    assert len([e for e in store.log if e[0] == "search-versions"]) == 3


def test_a_versions_history_is_its_own_events_and_the_alias_moves_that_name_it() -> None:
    b = backend(history_store())
    assert reads.events(b, "m", 1) == [
        event("registered", 1, "", at=EPOCH + 1),
        event("status", 1, "a -> b", at=EPOCH + 4),
        event("alias", None, "champion: none -> 1", at=EPOCH + 5),
        event("alias", None, "champion: 1 -> 2", at=EPOCH + 6),
    ]
    assert reads.events(b, "m", 3) == [event("registered", 3, "", at=EPOCH + 3, actor="bob")]
    assert reads.events(b, "m", "2") == [
        event("registered", 2, "", at=EPOCH + 2),
        event("alias", None, "champion: 1 -> 2", at=EPOCH + 6),
    ]


def test_history_of_a_missing_model_or_version_is_not_found() -> None:
    b = backend(history_store())
    assert refusal(NotFoundError, reads.events, b, "nope") == "model 'nope' not found"
    assert refusal(NotFoundError, reads.events, b, "m", 9) == "model 'm' has no version 9"
    assert refusal(InvalidInputError, reads.events, b, "m", 0).startswith("invalid model version 0")


# ------------------------------------------------------------------ download


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    frame["y"] = np.where(frame["a"] > 0, "p", "n")
    schema = data.infer_schema(frame, "y")
    fitted = model.fit(
        "logistic_regression", {"C": 0.5}, data.encode_features(frame, schema), data.encode_labels(frame, schema)
    )
    return model.save_bundle(fitted, "logistic_regression", {"C": 0.5}, schema, tmp_path_factory.mktemp("b") / "m").path


def test_download_puts_the_versions_files_straight_into_dst_and_reads_the_bundle(
    bundle_dir: Path, tmp_path: Path
) -> None:
    store = Store()
    store.add_version("m", 2)
    store.download_dirs[("m", "2")] = str(bundle_dir)
    dst = tmp_path / "new" / "dst"
    got = reads.download(backend(store), "m", "2", dst)
    assert got.path == dst
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in bundle_dir.iterdir())
    assert (got.model_type, got.params) == ("logistic_regression", {"C": 0.5})


def test_download_into_an_existing_directory_replaces_what_it_downloads(bundle_dir: Path, tmp_path: Path) -> None:
    store = Store()
    store.add_version("m", 1)
    store.download_dirs[("m", "1")] = str(bundle_dir)
    dst = tmp_path / "dst"
    dst.mkdir()
    assert reads.download(backend(store), "m", 1, dst).path == dst
    assert reads.download(backend(store), "m", 1, str(dst)).path == dst  # again, and given as text


def test_download_of_a_missing_version_writes_nothing(tmp_path: Path) -> None:
    store = Store()
    store.add_version("m", 1)
    dst = tmp_path / "dst"
    assert refusal(NotFoundError, reads.download, backend(store), "m", 2, dst) == "model 'm' has no version 2"
    assert not dst.exists()
    assert refusal(InvalidInputError, reads.download, backend(store), "m", "x", dst).startswith("invalid model version")


def test_a_failed_download_names_the_version_and_a_directory_that_is_no_bundle_is_refused(tmp_path: Path) -> None:
    store = Store()
    store.add_version("m", 1)
    store.inject["get_model_version_download_uri"] = [busy("server busy")]
    message = refusal(NotReadyError, reads.download, backend(store), "m", 1, tmp_path / "a")
    assert message == "MLflow at http://reg kept answering 'try again' for model 'm' version 1: server busy"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("no manifest")
    store.download_dirs[("m", "1")] = str(empty)
    with pytest.raises(InvalidInputError):
        reads.download(backend(store), "m", 1, tmp_path / "b")
    assert (tmp_path / "b" / "README").read_text() == "no manifest"


def test_the_artifacts_are_fetched_with_this_backends_uri_and_a_failure_names_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[Any, ...]] = []

    class Repository:
        def download_artifacts(self, path: str, dst_path: str) -> str:
            asked.append(("download", path, dst_path))
            raise MlflowException("artifact store refused", error_code=INVALID_PARAMETER_VALUE)

    def repository(location: str, tracking_uri: str) -> Repository:
        asked.append(("repository", location, tracking_uri))
        return Repository()

    monkeypatch.setattr(reads, "get_artifact_repository", repository)
    store = Store()
    store.add_version("m", 1)
    store.download_dirs[("m", "1")] = "s3://bucket/models/m-1"
    message = refusal(InvalidInputError, reads.download, backend(store), "m", 1, tmp_path / "a")
    assert message == "model 'm' version 1: artifact store refused"
    assert asked == [("repository", "s3://bucket/models/m-1", "http://reg"), ("download", "", str(tmp_path / "a"))]


# ------------------------------------------------------------------ backend: argument rules


@pytest.mark.parametrize(
    "name",
    ["m", "My Model-1.0_x", "a" * 255, "ünïcode", "a b", "x\ty"],
)
def test_names_mlflow_can_look_up_are_accepted(name: str) -> None:
    check_name(name)
    assert name_matches(name)


@pytest.mark.parametrize(
    "name", ["", "a" * 256, "a/b", "a:b", "a@b", "a'b", 'a"b', "a\\b", " a", "\ta", "/a", "@a", "'a"]
)
def test_names_mlflow_cannot_look_up_are_refused_with_the_rule(name: str) -> None:
    assert not name_matches(name)
    assert refusal(InvalidInputError, check_name, name) == (
        f"invalid model name {name!r} (no '/', ':', '@', quotes; at most 255 characters)"
    )


def test_a_name_that_is_not_text_is_refused() -> None:
    assert refusal(InvalidInputError, check_name, 5).startswith("invalid model name 5 ")
    assert refusal(InvalidInputError, check_key, "run key", 5) == (
        "invalid run key 5 (1-200 characters, no quotes or backslashes)"
    )


@pytest.mark.parametrize("key", ["k", "k" * 200, "a/b:c@d e"])
def test_run_keys_are_accepted_up_to_200_characters(key: str) -> None:
    check_key("run key", key)


@pytest.mark.parametrize("key", ["", "k" * 201, "a'b", 'a"b', "a\\b"])
def test_run_keys_a_search_filter_cannot_quote_are_refused(key: str) -> None:
    assert refusal(InvalidInputError, check_key, "run key", key) == (
        f"invalid run key {key!r} (1-200 characters, no quotes or backslashes)"
    )


@pytest.mark.parametrize(("given", "expected"), [(1, 1), ("7", 7), (" 12 ", 12), ("007", 7)])
def test_versions_are_positive_integers(given: int | str, expected: int) -> None:
    assert version_number(given) == expected


@pytest.mark.parametrize("given", [0, "0", -1, "-1", "1.0", "x", "", True, "1 2"])
def test_other_versions_are_refused(given: Any) -> None:
    assert refusal(InvalidInputError, version_number, given) == (
        f"invalid model version {given!r} (expected a positive integer)"
    )


def test_tag_values_are_text() -> None:
    assert tag_value("0.5") == "0.5"
    assert tag_value(0.5) == "0.5"
    assert tag_value(3) == "3"
    assert tag_value(None) == "None"


# ------------------------------------------------------------------ backend: retries, paging, writes, events


def test_reads_retry_a_busy_store_with_the_backends_attempts_and_backoff() -> None:
    store = Store()
    store.add_version("m", 1)
    store.inject["get_registered_model"] = [busy(), busy()]
    info = reads.get_version(backend(store, attempts=3, backoff_s=0.25), "m", 1)
    assert info.version == 1
    assert [e for e in store.log if e[0] == "sleep"] == [("sleep", 0.25), ("sleep", 0.5)]


def test_a_store_busy_for_every_attempt_is_not_ready_after_exactly_that_many() -> None:
    store = Store()
    store.add_version("m", 1)
    store.inject["get_registered_model"] = [busy("locked"), busy("locked"), busy("locked")]
    message = refusal(NotReadyError, reads.get_version, backend(store, attempts=3), "m", 1)
    assert message == "model 'm': MLflow at http://reg still busy after 3 attempts: locked"
    assert len([e for e in store.log if e[0] == "sleep"]) == 2
    store.inject["get_registered_model"] = [busy(), busy()]
    assert reads.get_version(backend(store, attempts=3), "m", 1).version == 1


def test_a_version_read_that_stays_busy_names_the_version() -> None:
    store = Store()
    store.add_version("m", 1)
    store.inject["get_model_version"] = [busy("locked")] * 3
    message = refusal(NotReadyError, reads.get_version, backend(store, attempts=3), "m", 1)
    assert message == "model 'm' version 1: MLflow at http://reg still busy after 3 attempts: locked"


def test_a_page_that_fails_once_is_fetched_again_with_the_same_token() -> None:
    store = Store(page_size=1)
    for n in (1, 2):
        store.add_version("m", n)
    b = backend(store)
    pages = b.paged(lambda token: store.search_model_versions("name = 'm'", max_results=1, page_token=token))
    first = next(pages)
    store.inject["search_model_versions"] = [race()]
    second = next(pages)
    assert [first.version, second.version] == ["2", "1"]
    assert [e for e in store.log if e[0] == "search-versions"] == [
        ("search-versions", "m", None),
        ("search-versions", "m", "1"),
    ]
    assert list(pages) == []
    store.inject["search_model_versions"] = [busy("busy")] * 3
    with pytest.raises(
        NotReadyError, match=r"^registry search: MLflow at http://reg still busy after 3 attempts: busy$"
    ):
        list(b.paged(lambda token: store.search_model_versions("name = 'm'", max_results=1, page_token=token)))


def test_an_empty_token_ends_the_paging() -> None:
    answered: list[str | None] = []

    def fetch(token: str | None) -> Page:
        answered.append(token)
        assert len(answered) < 5, "paging does not end"
        page = Page(["x"])
        page.token = ""
        return page

    assert list(backend(Store()).paged(fetch)) == ["x"]
    assert answered == [None]


def test_searches_of_a_missing_model_fail_before_searching() -> None:
    store = Store()
    assert refusal(NotFoundError, backend(store).search_versions, "nope") == "model 'nope' not found"
    assert refusal(InvalidInputError, backend(store).search_versions, "a/b").startswith("invalid model name")
    assert store.log == []


def test_call_translates_once_without_retrying() -> None:
    store = Store()
    b = backend(store)
    calls: list[int] = []

    def op() -> None:
        calls.append(1)
        raise race("lost")

    assert refusal(ConflictError, b.call, op, "thing") == "thing: lost a race with a concurrent write: lost"
    assert calls == [1]
    assert b.call(lambda: 5, "thing") == 5


def test_version_tags_are_written_with_the_version_as_text_and_retried_when_contended() -> None:
    store = Store()
    store.add_version("m", 1)
    store.inject["set_model_version_tag"] = [race()]
    b = backend(store, backoff_s=0.1)
    b.set_mv_tag("m", 1, "k", "v")
    assert store.log == [("sleep", 0.1), ("version-tag", "m", "1", "k", "v")]
    store.inject["set_model_version_tag"] = [race("lost")] * 3
    message = refusal(ConflictError, b.set_mv_tag, "m", 1, "k", "w")
    assert message.startswith("tag 'k' of model 'm' version 1: ")


def test_events_go_on_the_model_for_alias_moves_and_on_the_version_otherwise() -> None:
    store = Store()
    store.add_version("m", 1)
    b = backend(store)
    b.record("m", 1, ("k1", "v1"), on_model=True)
    b.record("m", None, ("k2", "v2"), on_model=False)
    b.record("m", 1, ("k3", "v3"), on_model=False)
    assert store.log == [
        ("model-tag", "m", "k1", "v1"),
        ("model-tag", "m", "k2", "v2"),
        ("version-tag", "m", "1", "k3", "v3"),
    ]
    store.inject["set_registered_model_tag"] = [race("lost")] * 3
    assert refusal(ConflictError, b.record, "m", 1, ("k", "v"), on_model=True).startswith("history of model 'm': ")


def test_an_event_is_encoded_at_the_clocks_time_by_the_actor_or_the_backends_user() -> None:
    b = backend(Store())
    key, value = b.event("status", 3, "a -> b", "why", None)
    assert key.startswith(HISTORY_PREFIX)
    assert decode("m", key, value) == HistoryEvent(iso_utc(EPOCH), "svc", "status", "m", 3, "a -> b", "why")
    key, value = b.event("alias", None, "d", "r", "ann")
    assert decode("m", key, value) == HistoryEvent(iso_utc(EPOCH), "ann", "alias", "m", None, "d", "r")


def test_the_default_hook_does_nothing() -> None:
    assert backend_module._no_hook("planned", {"x": 1}) is None


# ------------------------------------------------------------------ the Registry object over the parts


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Store:
    """The Store every Registry made in the test talks to (instead of an MLflow client for its URI)."""
    made = Store()
    uris: list[str] = []

    def client(tracking_uri: str) -> Store:
        uris.append(tracking_uri)
        return made

    monkeypatch.setattr(mlflow_client, "client", client)
    made.uris = uris  # type: ignore[attr-defined]
    return made


def clock() -> float:
    return EPOCH


def test_a_registry_connects_to_its_uri_as_its_user(store: Store) -> None:
    reg = Registry("sqlite:///x.db", user="pipeline")
    # (isinstance(reg, ModelRegistry) is not asserted: mutmut's method trampolines hide the methods from it.)
    assert (reg.tracking_uri, reg.user) == ("sqlite:///x.db", "pipeline")
    assert store.uris == ["sqlite:///x.db"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("attempts", [0, -1])
def test_fewer_than_one_attempt_is_refused(store: Store, attempts: int) -> None:
    message = refusal(InvalidInputError, lambda: Registry("u", user="p", attempts=attempts))
    assert message == f"attempts must be at least 1, got {attempts}"


def test_one_attempt_is_enough(store: Store) -> None:
    store.add_version("m", 1)
    assert Registry("u", user="p", attempts=1).get_version("m", 1).version == 1


def test_the_registry_retries_with_its_attempts_backoff_and_sleep(store: Store) -> None:
    store.add_version("m", 1)
    slept: list[float] = []
    reg = Registry("http://reg", user="p", attempts=2, backoff_s=0.3, sleep=slept.append)
    store.inject["get_registered_model"] = [busy()]
    assert reg.get_version("m", 1).version == 1
    assert slept == [0.3]
    store.inject["get_registered_model"] = [busy("down"), busy("down")]
    message = refusal(NotReadyError, reg.get_version, "m", 1)
    assert message == "model 'm': MLflow at http://reg still busy after 2 attempts: down"


def test_the_registry_defaults_are_ten_attempts_from_50_ms_and_a_60_s_lease(store: Store) -> None:
    slept: list[float] = []
    store.add_version("m", 1)
    claims: list[float] = []

    def hook(point: str, details: dict[str, Any]) -> None:
        if point == "lock-claimed":
            claims.extend(c.expires - c.since for c in claims_of(store.models["m"]["tags"]))

    reg = Registry("http://reg", user="p", sleep=slept.append, hook=hook)
    store.inject["get_registered_model"] = [busy()] * 9
    assert reg.get_version("m", 1).version == 1
    assert slept[:3] == [0.05, 0.1, 0.2] and len(slept) == 9
    store.inject["get_registered_model"] = [busy("down")] * 10
    assert refusal(NotReadyError, reg.get_version, "m", 1).endswith("still busy after 10 attempts: down")
    reg.set_status("m", 1, APPROVED, reason="r")
    assert claims == [60.0]


def test_the_registry_reads_every_way(store: Store, bundle_dir: Path, tmp_path: Path) -> None:
    store.add_version("m", 1, {STATUS_TAG: APPROVED, **dict([history_tag("registered", 1, "", at=EPOCH)])})
    store.add_version("m", 2)
    store.models["m"]["aliases"] = {CHAMPION: "1"}
    store.download_dirs[("m", "2")] = str(bundle_dir)
    reg = Registry("u", user="p")
    assert reg.get_version("m", 2).version == 2
    assert reg.resolve("m@champion").version == 1
    assert reg.list_models() == [ModelSummary("m", 2, 2, {CHAMPION: 1}, "")]
    assert [i.version for i in reg.list_versions("m")] == [1, 2]
    assert reg.aliases("m") == {CHAMPION: 1}
    champion = reg.champion("m")
    assert champion is not None and champion.version == 1
    assert reg.history("m") == [event("registered", 1, "", at=EPOCH)]
    assert reg.history("m", 2) == []
    assert reg.history("m", 1) == [event("registered", 1, "", at=EPOCH)]
    assert reg.download("m", 2, tmp_path / "d").path == tmp_path / "d"


def test_the_registry_changes_status_under_the_lock_with_its_clock_user_and_hook(store: Store) -> None:
    store.add_version("m", 1)
    points: list[tuple[str, dict[str, Any]]] = []
    claims: list[tuple[float, float, str]] = []

    def hook(point: str, details: dict[str, Any]) -> None:
        points.append((point, details))
        if point == "lock-claimed":
            claims.extend((c.since, c.expires, c.holder) for c in claims_of(store.models["m"]["tags"]))

    reg = Registry("u", user="pipeline", clock=clock, hook=hook, lease_s=40.0)
    info = reg.set_status("m", 1, APPROVED, reason="good")
    assert (info.status, info.aliases) == (APPROVED, (CHAMPION,))
    assert [since_expires[1] - since_expires[0] for since_expires in claims] == [40.0]
    assert claims[0][2] == "pipeline"
    assert "lock-claimed" in [p for p, _ in points] and "planned" in [p for p, _ in points]
    assert reg.history("m", 1)[0] == HistoryEvent(
        iso_utc(EPOCH), "pipeline", "status", "m", 1, f"{PENDING} -> {APPROVED}", "good"
    )
    assert claims_of(store.models["m"]["tags"]) == []  # released
    with pytest.raises(ConflictError):
        reg.set_status("m", 1, REJECTED, reason="r", actor="ann", expected=PENDING)
    info = reg.set_status("m", 1, REJECTED, reason="bad", actor="ann", expected=APPROVED)
    assert (info.status, info.aliases) == (REJECTED, ())
    assert reg.history("m", 1)[-1].actor == "ann"


def test_the_registry_waits_for_another_writer_only_as_long_as_it_is_told(store: Store) -> None:
    store.add_version("m", 1)
    store.models["m"]["tags"]["hybridml.lock.other"] = '{"holder": "bob", "since": 1.0, "expires": 1e12}'
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        assert len(pauses) < 50, "waited far longer than lock_wait_s"

    reg = Registry("u", user="p", lock_wait_s=0.0, sleep=sleep)
    message = refusal(ConflictError, reg.set_status, "m", 1, APPROVED, reason="r")
    assert message.startswith("model 'm' is being changed by bob (since ")
    assert message.endswith("gave up after 0 s, try again")
    assert reg.get_version("m", 1).status == PENDING


def test_the_registry_transitions_aliases_tags_and_events(store: Store) -> None:
    store.add_version("m", 1, {STATUS_TAG: APPROVED})
    store.add_version("m", 2)
    reg = Registry("u", user="p", clock=clock)
    seen: list[tuple[int, int | None]] = []

    def policy(current: VersionInfo, champion: VersionInfo | None) -> Decision | None:
        seen.append((current.version, None if champion is None else champion.version))
        return None

    assert reg.transition("m", 2, policy, actor="ann").status == PENDING
    assert seen == [(2, None)]
    info = reg.transition("m", 1, lambda current, champion: Decision(REJECTED, "drifted"), actor="ann")
    assert info.status == REJECTED
    assert reg.history("m", 1)[-1] == HistoryEvent(
        iso_utc(EPOCH), "ann", "status", "m", 1, f"{APPROVED} -> {REJECTED}", "drifted"
    )
    reg.set_alias("m", "staging", 2, reason="try", actor="ann")
    assert reg.aliases("m") == {"staging": 2}
    assert reg.history("m", 2)[-1] == HistoryEvent(iso_utc(EPOCH), "ann", "alias", "m", 2, "staging: none -> 2", "try")
    reg.set_version_tag("m", 2, "note", "x")
    assert reg.get_version("m", 2).tags["note"] == "x"
    recorded = reg.record_event("m", 2, "deployment", "applied", reason="why")
    assert recorded == HistoryEvent(iso_utc(EPOCH), "p", "deployment", "m", 2, "applied", "why")
    assert reg.record_event("m", 2, "canary", "d", actor="ann").reason == ""
    assert reg.history("m", 2)[-1].actor == "ann"


def test_the_registry_registers_with_its_user_as_actor(store: Store) -> None:
    store.add_model("m")
    reg = Registry("u", user="pipeline", clock=clock)
    info = reg.register("m", "s3://b/m/1", run_id="run-1", run_key="key-1", tags={"roc_auc": "0.9"})
    assert (info.name, info.version, info.status, info.roc_auc, info.run_id) == ("m", 1, PENDING, 0.9, "run-1")
    assert reg.register("m", "s3://b/m/2", run_id="run-2", run_key="key-1", tags={}).version == 1
    assert reg.history("m", 1)[0].actor == "pipeline"


def test_protocol_value_types() -> None:
    info = VersionInfo("m", 3, PENDING, None, None, None, None, None, "", ("staging",), {}, 0)
    assert info.model_id is None
    assert (info.ref, info.is_champion) == ("m/3", False)
    assert ModelSummary("m", None, 0, {}).description == ""
    # tags and aliases are left out of the hash, so records holding dicts can still be hashed.
    assert hash(info) == hash(
        VersionInfo("m", 3, PENDING, None, None, None, None, None, "", ("staging",), {"a": "b"}, 0)
    )
    assert hash(ModelSummary("m", 1, 1, {"a": 1})) == hash(ModelSummary("m", 1, 1, {"b": 2}))
    with pytest.raises(AttributeError):
        info.status = APPROVED  # type: ignore[misc]
