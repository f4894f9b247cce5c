"""XGBoost scoring through libxgboost's C API directly: ``import xgboost`` pulls pandas and scipy (seconds)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hybridml.errors import InvalidInputError

_LIB: ctypes.CDLL | None = None
# Objectives whose raw prediction already is the positive-class probability.
PROBABILITY_OBJECTIVES = frozenset({"binary:logistic"})


def _library() -> ctypes.CDLL:
    """Load libxgboost from the installed xgboost wheel without importing the Python package."""
    global _LIB
    if _LIB is None:
        spec = importlib.util.find_spec("xgboost")
        if spec is None or not spec.submodule_search_locations:
            raise InvalidInputError("xgboost is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libxgboost.so"
        if not path.is_file():
            raise InvalidInputError(f"libxgboost not found at {path}")
        lib = ctypes.cdll.LoadLibrary(str(path))
        lib.XGBGetLastError.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def _check(code: int) -> None:
    if code != 0:
        message = _library().XGBGetLastError().decode("utf-8", "replace")
        raise InvalidInputError(f"xgboost: {message.splitlines()[-1] if message else 'unknown error'}")


class NativeBooster:
    """A loaded XGBoost model that predicts from a C-contiguous float32 matrix (``inplace_predict`` semantics).

    Args:
        model_file: an XGBoost JSON (or UBJSON) model file.
        nthread: threads per prediction; 1 because a server process owns one core and runs one batch at a time.

    Raises:
        InvalidInputError: the file cannot be loaded.
    """

    def __init__(self, model_file: str | Path, *, nthread: int = 1) -> None:
        lib = _library()
        self._lib = lib
        self._handle = ctypes.c_void_p()
        _check(lib.XGBoosterCreate(None, ctypes.c_uint64(0), ctypes.byref(self._handle)))
        _check(lib.XGBoosterLoadModel(self._handle, str(model_file).encode()))
        _check(lib.XGBoosterSetParam(self._handle, b"nthread", str(nthread).encode()))
        length = ctypes.c_uint64()
        config = ctypes.c_char_p()
        _check(lib.XGBoosterSaveJsonConfig(self._handle, ctypes.byref(length), ctypes.byref(config)))
        raw = json.loads(ctypes.string_at(config, length.value))
        self.objective: str = raw["learner"]["objective"]["name"]
        self.n_features = int(raw["learner"]["learner_model_param"]["num_feature"])
        self._config = json.dumps(
            {"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0, "missing": float("nan"),
             "strict_shape": False, "cache_id": 0}
        ).encode()  # fmt: skip
        self._out_shape = ctypes.POINTER(ctypes.c_uint64)()
        self._out_dim = ctypes.c_uint64()
        self._out = ctypes.POINTER(ctypes.c_float)()
        self._out_refs = (ctypes.byref(self._out_shape), ctypes.byref(self._out_dim), ctypes.byref(self._out))
        # One proxy DMatrix reused by every call: without it libxgboost builds a fresh one per prediction, which
        # costs about twice the prediction of a few rows. The lock keeps the proxy and output pointers per call.
        self._proxy = ctypes.c_void_p()
        _check(lib.XGProxyDMatrixCreate(ctypes.byref(self._proxy)))
        self._lock = threading.Lock()

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Raw predictions (probabilities for ``binary:logistic``) of a 2-D float32 matrix, as a new float64 array."""
        if matrix.dtype != np.float32 or not matrix.flags.c_contiguous:
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        n_rows, n_cols = matrix.shape
        interface = b'{"data": [%d, true], "shape": [%d, %d], "strides": null, "typestr": "<f4", "version": 3}' % (
            matrix.ctypes.data,
            n_rows,
            n_cols,
        )
        with self._lock:
            _check(
                self._lib.XGBoosterPredictFromDense(self._handle, interface, self._config, self._proxy, *self._out_refs)
            )
            n = 1
            for i in range(self._out_dim.value):
                n *= self._out_shape[i]
            # The result buffer belongs to the booster and is overwritten by the next call: copy it out now.
            raw = ctypes.string_at(self._out, 4 * n)
        return np.frombuffer(raw, dtype=np.float32).astype(np.float64)

    def __del__(self) -> None:
        proxy: Any = getattr(self, "_proxy", None)
        if proxy is not None and proxy.value:
            self._lib.XGDMatrixFree(proxy)
            self._proxy = ctypes.c_void_p()
        handle: Any = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.XGBoosterFree(handle)
            self._handle = ctypes.c_void_p()
