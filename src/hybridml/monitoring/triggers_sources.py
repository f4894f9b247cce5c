"""Event sources polled by the trigger loop: a watched folder, an S3 prefix and a fixed-interval schedule.

A source's ``poll(trigger)`` submits its new events to the :class:`~hybridml.monitoring.triggers.Trigger`.
The first poll of a source that has never run in this home takes what is already there as its baseline
(seen, no run: one ``ignored`` decision counts them), so pointing a trigger at a full folder does not retrain
at once; files that arrive while the trigger is stopped are new events at its next start.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from hybridml.errors import InvalidInputError
from hybridml.monitoring.triggers import Event, Trigger

DATA_SUFFIXES = (".csv", ".parquet")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit s, m, h or d (``90s``, ``15m``, ``24h``, ``7d``).

    Raises:
        InvalidInputError: anything else, or zero.
    """
    match = _DURATION.match(text)
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise InvalidInputError(f"invalid duration {text!r}: give a positive number with s, m, h or d (e.g. 24h)")
    return seconds


def is_data_name(name: str) -> bool:
    """Whether a file or object name is a data table the pipeline reads (CSV or Parquet, not hidden/partial)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(DATA_SUFFIXES)


class Source(Protocol):
    """Something the trigger loop polls."""

    def poll(self, trigger: Trigger) -> None:
        """Submit new events to ``trigger``."""
        ...


class FolderSource:
    """New CSV/Parquet files in a folder (not recursive).

    A file is taken once its size and modification time have stayed the same for ``settle_s`` (seen in two
    polls at least that far apart), so a file still being written is not read half-way. Its key is path +
    size + mtime: the same file never triggers twice, a file rewritten in place is new data.
    """

    def __init__(self, folder: Path, settle_s: float = 2.0) -> None:
        self.folder = folder.expanduser().resolve()
        self.settle_s = settle_s
        self.source_id = f"folder:{self.folder}"
        self._candidates: dict[Path, tuple[int, int, float]] = {}

    def _listing(self) -> dict[Path, tuple[int, int]]:
        if not self.folder.is_dir():
            raise InvalidInputError(f"watched folder not found: {self.folder}")
        found = {}
        for path in self.folder.iterdir():
            if not is_data_name(path.name):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed between the listing and the stat
                continue
            if path.is_file():
                found[path] = (stat.st_size, stat.st_mtime_ns)
        return found

    @staticmethod
    def _key(path: Path, size: int, mtime_ns: int) -> str:
        return f"file:{path}:{size}:{mtime_ns}"

    def poll(self, trigger: Trigger) -> None:
        """Submit each file that became stable since the last poll."""
        now = trigger.clock()
        listing = self._listing()
        if trigger.source_state(self.source_id) is None:
            keys = [self._key(p, *stat) for p, stat in listing.items()]
            trigger.mark_seen(keys, f"file(s) already in {self.folder} when it was first watched")
            trigger.set_source_state(self.source_id, {"baseline_at": now})
            return
        for path in set(self._candidates) - set(listing):
            del self._candidates[path]
        # Oldest first, so the run of a burst taken in one poll trains on the newest file.
        for path, (size, mtime_ns) in sorted(listing.items(), key=lambda item: (item[1][1], item[0])):
            key = self._key(path, size, mtime_ns)
            if trigger.is_seen(key):
                self._candidates.pop(path, None)
                continue
            previous = self._candidates.get(path)
            if previous is None or previous[:2] != (size, mtime_ns):
                self._candidates[path] = (size, mtime_ns, now)  # new or still changing: look again later
                continue
            if now - previous[2] < self.settle_s:
                continue
            del self._candidates[path]
            trigger.submit(Event("folder", key, now, data_uri=str(path), detail=f"new file {path.name} ({size} B)"))


class S3Source:
    """New CSV/Parquet objects under an S3 prefix, listed with ``list_objects_v2``.

    boto3's usual settings apply (credential chain, ``AWS_ENDPOINT_URL`` for MinIO or moto). An object's key is
    its S3 key + ETag: an object overwritten with other content is new data, the same upload is not.

    Args:
        uri: ``s3://BUCKET/PREFIX``.
        client: an S3 client (default: ``boto3.client("s3")``, made at the first poll).
    """

    def __init__(self, uri: str, client: Any = None) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidInputError(f"invalid S3 prefix {uri!r} (expected s3://BUCKET/PREFIX)")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        self.source_id = f"s3:{self.bucket}/{self.prefix}"
        self._client = client

    def _objects(self) -> list[tuple[str, str, int, float]]:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        from botocore.exceptions import BotoCoreError, ClientError

        found = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    if is_data_name(item["Key"]):
                        modified = item.get("LastModified")
                        when = modified.timestamp() if hasattr(modified, "timestamp") else 0.0
                        etag = str(item.get("ETag", "")).strip('"')
                        found.append((item["Key"], etag, int(item.get("Size", 0)), when))
        except (ClientError, BotoCoreError) as exc:
            raise InvalidInputError(f"cannot list s3://{self.bucket}/{self.prefix}: {exc}") from exc
        return found

    def poll(self, trigger: Trigger) -> None:
        """Submit each object not seen before."""
        # Oldest first, so the run of a burst taken in one poll trains on the newest object.
        objects = sorted(self._objects(), key=lambda o: (o[3], o[0]))
        keys = {f"s3:{self.bucket}/{key}:{etag}": (key, size) for key, etag, size, _ in objects}
        if trigger.source_state(self.source_id) is None:
            trigger.mark_seen(list(keys), f"object(s) already under s3://{self.bucket}/{self.prefix} at first listing")
            trigger.set_source_state(self.source_id, {"baseline_at": trigger.clock()})
            return
        for event_key, (key, size) in keys.items():
            if trigger.is_seen(event_key):
                continue
            uri = f"s3://{self.bucket}/{key}"
            trigger.submit(Event("s3", event_key, trigger.clock(), data_uri=uri, detail=f"new object {uri} ({size} B)"))


class ScheduleSource:
    """A retraining run every ``every_s`` seconds (the first one interval after the schedule first started).

    The next due time is kept across restarts; a run missed while the trigger was stopped is made up once (not
    once per missed interval). Each slot's key is its due time, so a slot never starts two runs.
    """

    def __init__(self, every_s: float) -> None:
        if every_s <= 0:
            raise InvalidInputError(f"schedule interval must be positive, got {every_s}")
        self.every_s = every_s
        self.source_id = f"schedule:{every_s:g}s"

    def poll(self, trigger: Trigger) -> None:
        """Submit the slot that fell due, if any."""
        now = trigger.clock()
        state = trigger.source_state(self.source_id)
        if state is None:
            trigger.set_source_state(self.source_id, {"next_at": now + self.every_s})
            return
        due = float(state["next_at"])
        if now < due:
            return
        following = due + self.every_s
        # Slots missed while the trigger was stopped become this one run: the next is one interval from now.
        trigger.set_source_state(self.source_id, {"next_at": following if following > now else now + self.every_s})
        late = f", {now - due:.0f}s late" if following <= now else ""
        trigger.submit(Event("schedule", f"{self.source_id}:{due:.0f}", now, detail=f"every {self.every_s:g}s{late}"))
