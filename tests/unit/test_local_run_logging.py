"""A local run leaves the root logger as it found it, though kfp.local's parallel tasks swap its handlers unlocked."""

from __future__ import annotations

import io
import logging

from kfp.local import logging_utils

from hybridml.pipelines.local_run import root_logging_kept


def test_interleaved_kfp_task_logging_leaves_no_handler_behind() -> None:
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    stream = io.StringIO()
    with root_logging_kept():
        # Two ParallelFor iterations, as kfp.local's thread pool can order them: the first to enter is the first
        # to leave, so the second "restores" the first one's stdout handler.
        first, second = logging_utils.local_logger_context(), logging_utils.local_logger_context()
        first.__enter__()
        stray = root.handlers[0]
        second.__enter__()
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
        assert stray in root.handlers  # what kfp leaves without the guard
        root.setLevel(logging.CRITICAL)
        root.addHandler(logging.StreamHandler(stream))
    assert root.handlers == before
    assert root.level == level
    root.warning("after the run")
    assert stream.getvalue() == ""


def test_the_handlers_come_back_when_the_run_fails() -> None:
    root = logging.getLogger()
    before = root.handlers[:]
    try:
        with root_logging_kept():
            root.handlers.clear()
            raise RuntimeError("a step failed")
    except RuntimeError:
        pass
    assert root.handlers == before
