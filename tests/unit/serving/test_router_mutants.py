"""Router logic that needs no worker process, which the mutation run (issue 12) found unasserted: the split's
boundaries and fall-backs, construction refusals, the control state and its metrics, and /feedback records."""

from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from hybridml.errors import ConflictError, InvalidInputError, NotFoundError
from hybridml.serving.auth import ControlAuth
from hybridml.serving.metrics import LATENCY_BUCKETS
from hybridml.serving.payload_log import JsonLinesLog
from hybridml.serving.router import CANARY, SHADOW, STABLE, RouterApp, Worker, bucket

pytestmark = pytest.mark.unit

KEYS = [f"k{i}" for i in range(30_000)]


def workers(tmp_path: Path, *, canary: bool = True, alive: bool = True) -> dict[str, Worker]:
    chosen = {STABLE: Worker(STABLE, "1", tmp_path / "s.sock")}
    if canary:
        chosen[CANARY] = Worker(CANARY, "2", tmp_path / "c.sock", alive=alive)
    return chosen


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_bucket_is_crc32_of_the_utf8_key_so_it_survives_restarts_and_upgrades() -> None:
    # Sticky assignment must not depend on the process (hash salt) or on the router version: a client keeps
    # its variant across a restart. CRC-32 of the UTF-8 bytes, modulo 10 000.
    for key in ("user-1", "", "zoë", "\udcff"):
        assert bucket(key) == zlib.crc32(key.encode("utf-8", "replace")) % 10_000
    assert max(bucket(k) for k in KEYS) > 9_990 and min(bucket(k) for k in KEYS) < 10


def test_a_key_exactly_at_the_share_boundary_goes_to_stable(tmp_path: Path) -> None:
    at_1000 = next(k for k in KEYS if bucket(k) == 1000)
    just_below = next(k for k in KEYS if bucket(k) == 999)
    router = RouterApp("m", workers(tmp_path), canary_percent=10)
    assert router._choose(at_1000) == STABLE  # buckets [0, 1000) are the 10 %
    assert router._choose(just_below) == CANARY
    router.canary_percent = 11
    assert router._choose(at_1000) == CANARY


def test_every_key_goes_to_the_canary_at_100_and_none_at_0(tmp_path: Path) -> None:
    router = RouterApp("m", workers(tmp_path), canary_percent=100)
    assert {router._choose(k) for k in KEYS[:2000]} == {CANARY}
    assert {router._choose(None) for _ in range(500)} == {CANARY}
    router.canary_percent = 0
    assert {router._choose(k) for k in KEYS[:2000]} == {STABLE}
    assert {router._choose(None) for _ in range(500)} == {STABLE}


def test_without_a_live_canary_everything_goes_to_stable(tmp_path: Path) -> None:
    dead = RouterApp("m", workers(tmp_path, alive=False), canary_percent=100)
    assert {dead._choose(k) for k in KEYS[:500]} | {dead._choose(None)} == {STABLE}
    alone = RouterApp("m", workers(tmp_path, canary=False))
    alone.canary_percent = 100  # even if the share says otherwise
    assert {alone._choose(k) for k in KEYS[:500]} | {alone._choose(None)} == {STABLE}


@pytest.mark.parametrize("percent", [1, 25, 90])
def test_the_random_split_follows_the_share_and_the_seed(tmp_path: Path, percent: int) -> None:
    router = RouterApp("m", workers(tmp_path), canary_percent=percent, seed=3)
    chosen = [router._choose(None) for _ in range(20_000)]
    assert abs(chosen.count(CANARY) / 200 - percent) <= 1.0
    again = RouterApp("m", workers(tmp_path), canary_percent=percent, seed=3)
    assert [again._choose(None) for _ in range(20_000)] == chosen
    other = RouterApp("m", workers(tmp_path), canary_percent=percent, seed=4)
    assert [other._choose(None) for _ in range(20_000)] != chosen


def test_construction_refusals(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"^the router needs a stable worker$"):
        RouterApp("m", {CANARY: Worker(CANARY, "2", tmp_path / "c.sock")})
    with pytest.raises(InvalidInputError, match=r"^a canary percent needs a canary model$"):
        RouterApp("m", workers(tmp_path, canary=False), canary_percent=1)
    for bad in (-1, 101, True, 2.5):
        with pytest.raises(InvalidInputError, match=r"^canary percent must be an integer in \[0, 100\], got "):
            RouterApp("m", workers(tmp_path), canary_percent=bad)
    router = RouterApp("m", workers(tmp_path, canary=False), canary_percent=0)
    assert router.canary_percent == 0 and router.name == "m"


def test_the_split_gauge_starts_at_the_initial_share(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    RouterApp("m", workers(tmp_path), canary_percent=30, registry=registry)
    assert gauge(registry, "hybridml_canary_percent", model="m") == 30


def test_set_canary_percent_changes_share_gauge_and_counts_the_event(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    router = RouterApp("m", workers(tmp_path), canary_percent=5, registry=registry)
    router.set_canary_percent(40)
    assert router.canary_percent == 40
    assert gauge(registry, "hybridml_canary_percent", model="m") == 40
    assert gauge(registry, "hybridml_variant_events_total", model="m", variant=CANARY, event="split") == 1
    router.set_canary_percent(0)
    assert router.canary_percent == 0 and gauge(registry, "hybridml_canary_percent", model="m") == 0
    with pytest.raises(InvalidInputError, match=r"canary percent must be an integer in \[0, 100\], got 101"):
        router.set_canary_percent(101)
    assert router.canary_percent == 0


def test_traffic_needs_a_live_canary_but_zero_does_not(tmp_path: Path) -> None:
    for router in (
        RouterApp("m", workers(tmp_path, alive=False)),
        RouterApp("m", workers(tmp_path, canary=False)),
    ):
        with pytest.raises(ConflictError, match=r"^there is no live canary to send traffic to$"):
            router.set_canary_percent(1)
        router.set_canary_percent(0)
        assert router.canary_percent == 0


def test_promote_and_rollback_need_a_canary(tmp_path: Path) -> None:
    dead = RouterApp("m", workers(tmp_path, alive=False))
    with pytest.raises(ConflictError, match=r"^there is no live canary to promote$"):
        asyncio.run(dead.promote())
    alone = RouterApp("m", workers(tmp_path, canary=False))
    with pytest.raises(ConflictError, match=r"^there is no canary to roll back$"):
        asyncio.run(alone.rollback())


def test_rollback_drops_the_canary_and_counts_it(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    chosen = workers(tmp_path)
    canary = chosen[CANARY]
    router = RouterApp("m", chosen, canary_percent=20, registry=registry)
    asyncio.run(router.rollback())
    assert CANARY not in router.workers and canary.retired and not canary.alive
    assert router.canary_percent == 0 and gauge(registry, "hybridml_canary_percent", model="m") == 0
    assert gauge(registry, "hybridml_variant_events_total", model="m", variant=CANARY, event="rollback") == 1


def test_promote_makes_the_canary_stable_and_retires_the_old_one(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    chosen = workers(tmp_path)
    old, canary = chosen[STABLE], chosen[CANARY]
    router = RouterApp("m", chosen, canary_percent=20, registry=registry)
    asyncio.run(router.promote())
    assert router.workers == {STABLE: canary} and canary.variant == STABLE and canary.alive
    assert old.retired and not old.alive
    assert router.canary_percent == 0 and gauge(registry, "hybridml_canary_percent", model="m") == 0
    assert gauge(registry, "hybridml_variant_events_total", model="m", variant=STABLE, event="promote") == 1
    assert router.state() == {
        "model": "m",
        "canary_percent": 0,
        "variants": {STABLE: {"version": "2", "pid": None, "alive": True}},
    }


def test_state_lists_every_variant(tmp_path: Path) -> None:
    chosen = workers(tmp_path, alive=False)
    chosen[SHADOW] = Worker(SHADOW, "3", tmp_path / "sh.sock")
    assert RouterApp("m", chosen).state() == {
        "model": "m",
        "canary_percent": 0,
        "variants": {
            STABLE: {"version": "1", "pid": None, "alive": True},
            CANARY: {"version": "2", "pid": None, "alive": False},
            SHADOW: {"version": "3", "pid": None, "alive": True},
        },
    }


def test_feedback_writes_one_record_per_label_with_the_model(tmp_path: Path) -> None:
    log = tmp_path / "feedback.jsonl"
    router = RouterApp("m", workers(tmp_path), feedback_log=JsonLinesLog(log), classes=("no", "yes"))
    body = orjson.dumps({"items": [{"request_id": "r1", "label": "yes"}, {"request_id": "r2", "label": "no"}]})
    assert router.feedback(body) == 2
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["request_id"], r["label"], r["model"]) for r in records] == [("r1", 1, "m"), ("r2", 0, "m")]
    assert all(set(r) == {"ts", "request_id", "label", "model"} for r in records)
    with pytest.raises(InvalidInputError, match=r"^Unrecognized request format: "):
        router.feedback(b"{nope")


def test_feedback_without_a_log_is_not_found(tmp_path: Path) -> None:
    expected = r"^feedback is not enabled on this server \(start it with a feedback log\)$"
    with pytest.raises(NotFoundError, match=expected):
        RouterApp("m", workers(tmp_path)).feedback(b'{"request_id": "r", "label": 1}')


def test_router_metrics_have_their_names_and_labels(tmp_path: Path) -> None:
    # Dashboards and alert rules query these names and labels (docs/monitoring.md); labels are passed by name here,
    # so a renamed label fails as well as a renamed metric.
    registry = CollectorRegistry()
    router = RouterApp("m", workers(tmp_path), registry=registry)
    router.requests.labels(model="m", version="1", variant=STABLE, code="200").inc()
    router.latency.labels(model="m", variant=STABLE).observe(0.01)
    router.shadow_outcomes.labels(model="m", outcome="ok").inc()
    router.events.labels(model="m", variant=CANARY, event="died").inc()
    labels = {"model": "m", "version": "1", "variant": STABLE, "code": "200"}
    assert gauge(registry, "hybridml_router_requests_total", **labels) == 1
    assert gauge(registry, "hybridml_router_seconds_count", model="m", variant=STABLE) == 1
    # The serving latency buckets (shared with the model servers' histograms, so panels can compare them).
    for bound in LATENCY_BUCKETS:
        le = floatToGoString(bound)
        assert gauge(registry, "hybridml_router_seconds_bucket", model="m", variant=STABLE, le=le) == (bound >= 0.01)
    assert gauge(registry, "hybridml_shadow_requests_total", model="m", outcome="ok") == 1
    assert gauge(registry, "hybridml_variant_events_total", model="m", variant=CANARY, event="died") == 1
    assert gauge(registry, "hybridml_canary_percent", model="m") == 0
    default = RouterApp("m", workers(tmp_path))  # by default: a registry of its own, loopback-only feedback
    assert isinstance(default.registry, CollectorRegistry) and default.registry is not registry
    assert isinstance(default.control_auth, ControlAuth)
