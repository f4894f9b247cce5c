"""Issue 12: what the evaluation, secret redaction, skops allow-list generator and model storage promise.

Written against the mutants that survived tests/unit/test_model_and_policy.py, test_secrets.py,
test_model_safety.py and serving/test_serving_parts.py (see docs/mutation-report.md).
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from hybridml.core import evaluate, skops_types
from hybridml.core.secrets import redact
from hybridml.core.skops_allowlist import ALLOWED_SKOPS_TYPES
from hybridml.errors import InvalidInputError, NotFoundError
from hybridml.serving import storage
from hybridml.serving.storage import check_no_pickle, inside, resolve_model, safe_relative

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- evaluate.roc


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.4 * y + rng.random(n) * 0.6, 0.0, 1.0)


def test_roc_refuses_anything_but_two_classes() -> None:
    for labels in ([1, 1, 1], [0, 1, 2]):
        with pytest.raises(InvalidInputError, match=r"^ROC AUC needs both classes in the evaluation labels$"):
            evaluate.roc(np.array(labels), np.array([0.1, 0.5, 0.9]))


def test_roc_is_sklearns_auc_and_curve_when_short() -> None:
    y, s = _scores(50)
    result = evaluate.roc(y, s)
    fpr, tpr, thr = roc_curve(y, s)
    assert len(fpr) <= 200  # short enough to keep every point
    assert result.roc_auc == float(roc_auc_score(y, s))
    assert result.fpr == fpr.tolist()
    assert result.tpr == tpr.tolist()
    assert result.thresholds[1:] == thr[1:].tolist()
    # roc_curve's +inf first threshold is capped just above the largest score, so the record is valid JSON.
    assert result.thresholds[0] == 1.0 + float(np.max(s))
    assert all(isinstance(v, float) for v in [*result.fpr, *result.tpr, *result.thresholds])


def test_roc_cap_for_negative_scores_stays_above_them() -> None:
    y = np.array([0, 0, 1, 1])
    s = np.array([-4.0, -3.0, -2.0, -1.0])
    result = evaluate.roc(y, s)
    assert np.isfinite(result.thresholds).all()
    assert result.thresholds[0] > float(np.max(s))
    assert result.thresholds[0] == 1.0  # above every score and never below the [0, 1] range of a probability


@pytest.mark.parametrize("max_points", [200, 7])
def test_roc_thins_a_long_curve_to_max_points_keeping_both_ends(max_points: int) -> None:
    y, s = _scores(4000, seed=1)
    full_fpr, full_tpr, _ = roc_curve(y, s)
    assert len(full_fpr) > max_points
    result = evaluate.roc(y, s) if max_points == 200 else evaluate.roc(y, s, max_points=max_points)
    assert len(result.fpr) == len(result.tpr) == len(result.thresholds) == max_points
    assert (result.fpr[0], result.tpr[0]) == (0.0, 0.0)
    assert (result.fpr[-1], result.tpr[-1]) == (1.0, 1.0)
    # Every kept point is a point of the full curve, in order.
    pairs = list(zip(full_fpr.tolist(), full_tpr.tolist(), strict=True))
    kept = [pairs.index(p) for p in zip(result.fpr, result.tpr, strict=True)]
    assert kept == sorted(kept)
    assert result.roc_auc == float(roc_auc_score(y, s))  # the AUC of the full curve, not of the thinned one


# ---------------------------------------------------------------- secrets.redact


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://u:p@[::1]:5000/x", "http://u:***@[::1]:5000/x"),  # IPv6 host keeps its brackets
        ("http://u:p@Host.Example:8080/", "http://u:***@Host.Example:8080/"),  # host as written
        ("http://u:p@h:0/", "http://u:***@h:0/"),
        ("http://u:p@/x", "http://u:***@/x"),  # no host
        ("http://:p@h/x", "http://:***@h/x"),  # no user name
        ("http://u:pa:ss@h/", "http://u:***@h/"),  # a ':' in the password
        ("http://u:p@ss@h/", "http://u:***@h/"),  # an '@' in the password: the host is after the last one
        ("http://u:p@h/a?b=c#d", "http://u:***@h/a?b=c#d"),
    ],
)
def test_redact_keeps_everything_but_the_password(uri: str, shown: str) -> None:
    assert redact(uri) == shown


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("alice:s3cret@db", "alice:***@db"),
        ("x/alice:s3cret@db", "x/alice:***@db"),
        ("postgresql:/alice:pa:ss@db/x", "postgresql:/alice:***@db/x"),
        ("x:y@a/u:v@b", "x:***@a/u:***@b"),  # every credential, not only the first
        ("note: a@b", "note: a@b"),  # white space after ':' is no password
        ("user:@host", "user:@host"),  # nothing to hide
    ],
)
def test_redact_hides_loose_credentials(uri: str, shown: str) -> None:
    assert redact(uri) == shown


@pytest.mark.parametrize("uri", ["http://u:s3cret@h:bad/", "http://u:s3cret@h:99999/"])
def test_redact_shows_nothing_of_an_unparsable_uri(uri: str) -> None:
    assert redact(uri) == "<unparsable URI>"


# ---------------------------------------------------------------- skops_types: render and the command


def _ruff_format(text: str) -> str:
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run(
        [str(ruff), "format", "--stdin-filename", str(skops_types.ALLOWLIST_FILE), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return done.stdout


def _one_name_of_line_length(width: int) -> str:
    """A dotted name whose one-line entry ``    "t": ("NAME",),`` is exactly ``width`` characters."""
    name = "m." + "C" * (width - len('    "t": ("m.",),'))
    assert len(f'    "t": ("{name}",),') == width
    return name


@pytest.mark.parametrize(
    "types",
    [
        {"t": (_one_name_of_line_length(120),)},
        {"t": (_one_name_of_line_length(121),)},
        {"t": ("a.B",), "s": ("a.B", "c.D")},
        {"z": ("x.Y",), "a": ("x.Y",)},
    ],
)
def test_render_is_what_ruff_format_leaves_and_holds_the_types(types: dict[str, tuple[str, ...]]) -> None:
    text = skops_types.render(types)
    assert _ruff_format(text) == text
    namespace: dict[str, Any] = {}
    exec(compile(text, "rendered", "exec"), namespace)
    assert namespace["ALLOWED_SKOPS_TYPES"] == types
    assert list(namespace["ALLOWED_SKOPS_TYPES"]) == sorted(types)  # keys sorted: a stable file
    assert text.startswith('"""Exact skops types each supported scikit-learn model may contain.')
    assert f"# Written by `{skops_types.WRITE_COMMAND}` with scikit-learn " in text
    assert skops_types.WRITE_COMMAND == "python -m hybridml.core.skops_types --write"


def test_main_write_and_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "skops_allowlist.py"
    monkeypatch.setattr(skops_types, "ALLOWLIST_FILE", target)
    monkeypatch.setattr(skops_types, "observed_types", lambda: dict(ALLOWED_SKOPS_TYPES))
    assert skops_types.main(["--write"]) == 0
    assert target.read_text() == skops_types.render(ALLOWED_SKOPS_TYPES)
    total = sum(len(v) for v in ALLOWED_SKOPS_TYPES.values())
    assert capsys.readouterr().out == f"wrote {target} ({total} types)\n"

    assert skops_types.main(["--check"]) == 0
    assert capsys.readouterr().err == ""
    changed = {**ALLOWED_SKOPS_TYPES, "random_forest": ("builtins.eval",)}
    monkeypatch.setattr(skops_types, "observed_types", lambda: changed)
    assert skops_types.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"{target} is out of date" in err
    assert "builtins.eval" in err
    assert skops_types.WRITE_COMMAND in err
    assert target.read_text() == skops_types.render(ALLOWED_SKOPS_TYPES)  # --check never writes


@pytest.mark.parametrize("argv", [[], ["--write", "--check"]])
def test_main_needs_exactly_one_action(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skops_types, "observed_types", lambda: pytest.fail("must not train"))
    with pytest.raises(SystemExit) as exc:
        skops_types.main(argv)
    assert exc.value.code == 2


# ---------------------------------------------------------------- storage: paths


def _message(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidInputError) as exc:
        call(*args, **kwargs)
    return str(exc.value)


def test_percent_decoding_two_rounds_accepted_three_refused() -> None:
    assert str(safe_relative("a%2520b")) == "a b"
    assert str(safe_relative("a%20b")) == "a b"
    assert str(safe_relative("ab")) == "ab"
    assert "percent-encoded too many times" in _message(safe_relative, "a%252520b")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("a\x00b", "NUL or backslash"),
        ("a\\b", "NUL or backslash"),
        ("a%5cb", "NUL or backslash"),
        ("/etc", "is absolute"),
        ("%2fetc", "is absolute"),
        ("C:", "is absolute"),
        ("c:x", "is absolute"),
        ("..", "escapes the model root"),
        ("a/%2e%2e/%2e%2e", "escapes the model root"),
    ],
)
def test_each_refusal_says_why(path: str, why: str) -> None:
    assert why in _message(safe_relative, path)


def test_refusals_quote_at_most_100_characters_of_the_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "up").symlink_to(tmp_path)
    tail = "a" * 97 + "TAIL"
    for call, path, shown in [
        (safe_relative, "/a" + tail, None),
        (safe_relative, "\\a" + tail, None),
        (safe_relative, "../" + tail, None),
        (safe_relative, "%2525252e" + tail, "%2e" + tail),  # quoted as decoded so far
        (lambda p: inside(root, p), "up/" + tail, None),
        (resolve_model, "../" + tail, None),
        (lambda p: resolve_model(p, model_root=root), "/a" + tail, None),
    ]:
        message = _message(call, path)
        assert repr((shown or path)[:100]) in message, message
        assert "TAIL" not in message, message


@pytest.mark.parametrize("path", [":", "x", "ab:c", "a/b", "."])
def test_ordinary_relative_paths_are_accepted(path: str) -> None:
    assert safe_relative(path) == type(safe_relative("x"))(path)


def test_inside_accepts_the_root_itself_and_refuses_a_symlink_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "m").mkdir(parents=True)
    assert inside(root, ".") == root.resolve()
    assert inside(root, "m/new") == (root / "m" / "new").resolve()
    (root / "m" / "up").symlink_to(tmp_path)
    assert "resolves outside the model root" in _message(inside, root, "m/up/x")


# ---------------------------------------------------------------- storage: pickle refusal


@pytest.mark.parametrize("suffix", [".pkl", ".PICKLE", ".joblib", ".pt", ".pth", ".dill", ".cloudpickle", ".sav"])
def test_every_pickle_suffix_is_refused_whatever_its_case(suffix: str, tmp_path: Path) -> None:
    (tmp_path / f"weights{suffix}").write_bytes(b"not a pickle header")
    assert "refusing pickle-based model file" in _message(check_no_pickle, tmp_path)
    check_no_pickle(tmp_path, allow_pickle=True)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_pickle_header_is_refused_under_any_name(protocol: int, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.json").write_bytes(pickle.dumps({"a": 1}, protocol=protocol))
    assert "refusing pickle-format file model.json" in _message(check_no_pickle, tmp_path)


def test_files_below_a_folder_are_checked_and_folders_are_not_files(tmp_path: Path) -> None:
    (tmp_path / "weights.pkl").mkdir()  # a folder with a pickle-like name is not itself a file
    (tmp_path / "weights.pkl" / "x.json").write_text("{}")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "one").write_bytes(b"\x80")
    check_no_pickle(tmp_path)
    (tmp_path / "weights.pkl" / "deep").mkdir()
    (tmp_path / "weights.pkl" / "deep" / "m.dill").write_text("x")
    assert "m.dill" in _message(check_no_pickle, tmp_path)


# ---------------------------------------------------------------- storage: resolve_model


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "model.json").write_text("{}")
    return tmp_path / "models"


def test_schemes_case_and_drive_letters(root: Path) -> None:
    m = (root / "m").resolve()
    assert resolve_model(f"FILE://{m}") == m
    assert resolve_model(f"file://{m}", model_root=root) == m
    assert resolve_model(str(m), model_root=root) == m
    assert resolve_model(str(root), model_root=root) == root.resolve()
    for uri in ("ab://x/y", "HTTP://h/m", "s3a://b/m"):
        message = _message(resolve_model, uri)
        assert "is not allowed (allowed: file, s3)" in message
        assert repr(uri.split(":", 1)[0].lower()) in message
    # A one-letter "scheme" is a drive letter: refused as a path, not as a scheme.
    assert "is absolute" in _message(resolve_model, "C:/models", model_root=root)
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_model("C:/models/none-here")


def test_dot_dot_is_refused_with_or_without_a_root(root: Path) -> None:
    for uri in ("../m", "%2e%2e/m", f"file://{root}/../models/m", f"{root}/../models/m"):
        assert "contains '..'" in _message(resolve_model, uri)
        assert "contains '..'" in _message(resolve_model, uri, model_root=root)


def test_absolute_paths_must_lie_inside_the_root(root: Path, tmp_path: Path) -> None:
    (root / "out").symlink_to(tmp_path)
    assert "is outside the model root" in _message(resolve_model, str(root / "out"), model_root=root)
    assert "is outside the model root" in _message(resolve_model, str(tmp_path), model_root=root)
    assert "resolves outside the model root" in _message(resolve_model, "out", model_root=root)


def test_a_file_is_not_a_model_directory(root: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_model(str(root / "m" / "model.json"))
    with pytest.raises(NotFoundError):
        resolve_model("m/model.json", model_root=root)


def test_resolve_model_refuses_pickle_unless_allowed(root: Path) -> None:
    (root / "m" / "model.pkl").write_bytes(b"x")
    assert "pickle" in _message(resolve_model, "m", model_root=root)
    assert resolve_model("m", model_root=root, allow_pickle=True) == (root / "m").resolve()


# ---------------------------------------------------------------- storage: S3, with a fake client


class _FakeS3:
    """list_objects_v2 pages and download_file over a dict of keys; records what was asked."""

    def __init__(self, keys: list[str], page_size: int = 3) -> None:
        self.keys, self.page_size = sorted(keys), page_size
        self.listed: list[dict[str, str]] = []
        self.downloads: list[tuple[str, str]] = []

    def get_paginator(self, name: str) -> _FakeS3:
        assert name == "list_objects_v2"
        return self

    def paginate(self, *, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        self.listed.append({"Bucket": Bucket, "Prefix": Prefix})
        keys = [k for k in self.keys if k.startswith(Prefix)]
        pages = [keys[i : i + self.page_size] for i in range(0, len(keys), self.page_size)]
        return [{"Contents": [{"Key": k} for k in page]} for page in pages] + [{}]

    def download_file(self, bucket: str, key: str, target: str) -> None:
        self.downloads.append((bucket, key))
        Path(target).write_text(key)


def _files(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): p.read_text() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("uri", ["s3://models/cancer/1", "s3://models/cancer/1/", "s3://models//cancer/1"])
def test_s3_fetches_exactly_the_folder(uri: str, tmp_path: Path) -> None:
    s3 = _FakeS3(
        [
            "cancer/1/",  # a folder marker
            "cancer/1/model.json",
            "cancer/1/sub/meta.json",
            "cancer/1/a/b/c/deep.json",
            "cancer/1//double.json",
            "cancer/1/Xfile.json",
            "cancer/10/model.json",  # another version: never part of version 1
            "cancer/1-old/model.json",
            "cancer/1model.json",
        ]
    )
    local = resolve_model(uri, cache_dir=tmp_path, s3_client=s3)
    assert local.parent == tmp_path
    assert local.name.startswith("model-")
    assert _files(local) == {
        "model.json": "cancer/1/model.json",
        "sub/meta.json": "cancer/1/sub/meta.json",
        "a/b/c/deep.json": "cancer/1/a/b/c/deep.json",
        "double.json": "cancer/1//double.json",
        "Xfile.json": "cancer/1/Xfile.json",
    }
    assert s3.listed == [{"Bucket": "models", "Prefix": "cancer/1/"}]
    assert all(bucket == "models" for bucket, _ in s3.downloads)


def test_s3_prefix_starting_with_x(tmp_path: Path) -> None:
    local = resolve_model("s3://models/Xray/", cache_dir=tmp_path, s3_client=_FakeS3(["Xray/model.json", "ray/o.json"]))
    assert _files(local) == {"model.json": "Xray/model.json"}


def test_s3_whole_bucket(tmp_path: Path) -> None:
    s3 = _FakeS3(["model.json", "d/x.json"])
    local = resolve_model("s3://models", cache_dir=tmp_path, s3_client=s3)
    assert _files(local) == {"model.json": "model.json", "d/x.json": "d/x.json"}
    assert s3.listed == [{"Bucket": "models", "Prefix": ""}]


def test_s3_refusals(tmp_path: Path) -> None:
    assert (
        _message(resolve_model, "s3:///cancer/1", s3_client=_FakeS3([])) == "s3 URI needs a bucket: s3://BUCKET/PREFIX"
    )
    whole = _FakeS3(["ok.json", "/abs.json"])  # a key that is an absolute path is refused, not made relative
    assert "is absolute" in _message(resolve_model, "s3://models", cache_dir=tmp_path, s3_client=whole)
    assert "escapes the model root" in _message(resolve_model, "s3://models/a/../b", s3_client=_FakeS3([]))
    evil = _FakeS3(["m/ok.json", "m/../../escape.json"])
    assert "escapes the model root" in _message(resolve_model, "s3://models/m", cache_dir=tmp_path, s3_client=evil)
    assert not (tmp_path / "escape.json").exists()
    assert "pickle" in _message(resolve_model, "s3://models/m", cache_dir=tmp_path, s3_client=_FakeS3(["m/w.pt"]))


def test_s3_nothing_there_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(NotFoundError, match="no objects under s3://models/none"):
        resolve_model("s3://models/none", cache_dir=cache, s3_client=_FakeS3(["none/", "other/x"]))
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("keys", "refusal"),
    [
        (["m/ok.json", "m/../../escape.json"], "escapes the model root"),
        (["m/ok.json", "m/w.pt"], "refusing pickle-based model file w.pt"),
        (["m/ok.json", "m/weights.bin"], "refusing pickle-format file weights.bin"),
    ],
)
def test_a_refused_s3_model_leaves_nothing_in_the_cache(keys: list[str], refusal: str, tmp_path: Path) -> None:
    class _Pickled(_FakeS3):
        def download_file(self, bucket: str, key: str, target: str) -> None:
            super().download_file(bucket, key, target)
            if key.endswith(".bin"):
                Path(target).write_bytes(b"\x80\x04K.")  # a pickle protocol 4 header under a neutral name

    cache = tmp_path / "cache"
    cache.mkdir()
    assert refusal in _message(resolve_model, "s3://models/m", cache_dir=cache, s3_client=_Pickled(keys))
    assert list(cache.iterdir()) == []


def test_an_s3_model_with_pickles_is_kept_when_allowed(tmp_path: Path) -> None:
    local = resolve_model("s3://models/m", cache_dir=tmp_path, s3_client=_FakeS3(["m/w.pt"]), allow_pickle=True)
    assert _files(local) == {"w.pt": "m/w.pt"}


def test_s3_object_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage.MAX_OBJECTS == 1000
    monkeypatch.setattr(storage, "MAX_OBJECTS", 5)  # the same rule, five objects instead of a thousand
    keys = [f"m/{i}.json" for i in range(5)] + ["m/d/"]
    assert len(_files(resolve_model("s3://models/m", cache_dir=tmp_path, s3_client=_FakeS3(keys)))) == 5
    message = _message(resolve_model, "s3://models/m", cache_dir=tmp_path, s3_client=_FakeS3([*keys, "m/5.json"]))
    assert message == "s3://models/m holds more than 5 objects"


def test_s3_client_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    made: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def client(*args: Any, **kwargs: Any) -> _FakeS3:
        made.append((args, kwargs))
        return _FakeS3(["m/model.json"])

    monkeypatch.setattr(boto3, "client", client)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    resolve_model("s3://models/m", cache_dir=tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    resolve_model("s3://models/m", cache_dir=tmp_path)
    assert made == [(("s3",), {"endpoint_url": None}), (("s3",), {"endpoint_url": "http://127.0.0.1:9000"})]


def test_names_in_messages_match_the_allowed_schemes() -> None:
    assert storage.SCHEMES == ("file", "s3")
    assert re.search(r"allowed: file, s3\)", _message(resolve_model, "gs://b/m"))


# ---------------------------------------------------------------- skops_types: the tables the generator trains on


def test_mixed_table_holds_every_kind_of_input_and_a_learnable_label() -> None:
    frame, target = skops_types._mixed_table(4000, seed=3)
    assert target == "label"
    assert len(frame) == 4000
    assert list(frame.columns) == ["amount", "count", "flag", "colour", "region", "label"]
    assert frame["flag"].dtype == bool
    assert frame["count"].dtype.kind == "i"
    assert set(frame["count"]) == set(range(20))  # counts 0 to 19, all of them in 4000 rows
    assert set(frame["colour"]) == {"red", "green", "blue"}
    assert set(frame["region"].dropna()) == {"north", "south", "east", "west", "centre"}
    assert set(frame["label"]) == {"yes", "no"}
    # Missing values where a model must handle them, never in the label; a minority, so the column still counts.
    for column in ("amount", "region"):
        assert 0.0 < frame[column].isna().mean() < 0.5
    assert not frame[["count", "flag", "colour", "label"]].isna().any().any()
    # The label depends on the features (so the models hold real splits and weights): each one moves it.
    yes = frame["label"] == "yes"
    assert frame.loc[yes, "amount"].mean() > frame.loc[~yes, "amount"].mean()
    # Red moves the score by a whole noise standard deviation: far more than chance differences between groups.
    assert yes[frame["colour"] == "red"].mean() > yes[frame["colour"] != "red"].mean() + 0.15
    assert yes[frame["flag"]].mean() < yes[~frame["flag"]].mean()
    assert 0.2 < yes.mean() < 0.8
    # Seeded: the same table each time, another one for another seed.
    again, _ = skops_types._mixed_table(4000, seed=3)
    assert frame.equals(again)
    assert not frame.equals(skops_types._mixed_table(4000, seed=4)[0])
    assert skops_types._mixed_table(10)[0].equals(skops_types._mixed_table(10, seed=0)[0])


def test_tables_cover_complete_mixed_and_early_stopping_inputs() -> None:
    tables = list(skops_types._tables())
    assert [name for name, _, _ in tables] == [
        "breast cancer (numeric, complete)",
        "mixed (categories, booleans, missing values)",
        "large mixed (early stopping)",
    ]
    (_, cancer, cancer_target), (_, small, small_target), (_, large, large_target) = tables
    assert not cancer.isna().any().any()
    assert cancer_target in cancer.columns
    assert small_target == large_target == "label"
    assert len(small) == 400
    assert len(large) > 10_000  # HistGradientBoosting's early stopping switches on above 10,000 rows
    assert large.head(400).equals(skops_types._mixed_table(len(large), seed=1)[0].head(400))
    assert not small.equals(large.head(400))


def test_observed_types_trains_every_table_with_both_parameter_sets() -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def record(bundle: Any, table: str, fitted: Any, X: np.ndarray) -> None:
        params = fitted.get_params()  # a pipeline's step parameters are named STEP__NAME
        for name, value in bundle.params.items():
            assert [v for k, v in params.items() if k == name or k.endswith(f"__{name}")] == [value], name
        assert X.shape[0] > 0
        seen.append((table, bundle.model_type, dict(bundle.params)))

    types = skops_types.observed_types(on_model=record)
    assert types == ALLOWED_SKOPS_TYPES
    tables = [name for name, _, _ in skops_types._tables()]
    expected = [
        (table, model_type, params)
        for table in tables
        for model_type in types
        for params in (skops_types._SMALL[model_type], skops_types._TUNED[model_type])
    ]
    assert sorted(map(repr, seen)) == sorted(map(repr, expected))


def test_main_help_names_the_command_and_both_actions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        skops_types.main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: python -m hybridml.core.skops_types ")
    assert "Generate the exact skops type allow-list" in out
    assert "--write rewrite skops_allowlist.py" in out
    assert "--check exit 1 if skops_allowlist.py is out of date" in out
