"""Model server entry point: ``python -m hybridml.serving --model-dir DIR --model-name NAME`` (``serve``: SageMaker)."""

from __future__ import annotations

import argparse
import os
import sys

from hybridml.errors import HybridmlError
from hybridml.serving.auth import TOKEN_ENV
from hybridml.serving.payload_log import DEFAULT_KEEP, DEFAULT_MAX_BYTES
from hybridml.serving.predictor import DEFAULT_MAX_ROWS

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    """The server's flags (dashed names, the same as the earlier KServe-based server's)."""
    parser = argparse.ArgumentParser(
        prog="python -m hybridml.serving",
        description="Serve a hybridml model bundle over the KServe V1/V2 REST protocol.",
        allow_abbrev=False,
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-dir", help="bundle directory (hybridml.json + model file)")
    model.add_argument("--model-uri", help="bundle location: file:///DIR, s3://BUCKET/PREFIX or a path")
    parser.add_argument("--model-name", required=True, help="name in the URL: /v2/models/NAME/infer")
    parser.add_argument("--model-version", default="", help="version reported in the X-Hybridml-Version header")
    parser.add_argument("--model-root", default=None, help="local models must lie inside this directory")
    parser.add_argument("--allow-pickle", action="store_true", help="accept model directories with pickle files")
    parser.add_argument("--bind-host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--bind-port", type=int, default=8080, help="HTTP port")
    parser.add_argument("--canary-dir", default=None, help="optional canary bundle served under the same name")
    parser.add_argument("--canary-version", default="", help="version of the canary bundle")
    parser.add_argument("--canary-percent", type=int, default=0, help="share of requests (0-100) the canary answers")
    parser.add_argument("--shadow-dir", default=None, help="optional challenger bundle that gets a copy of requests")
    parser.add_argument("--shadow-version", default="", help="version of the shadow bundle")
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the stable/canary random split")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="largest batch accepted per request")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="413 above this size")
    parser.add_argument("--payload-log", default=None, help="JSON-lines file of requests and predictions")
    parser.add_argument(
        "--payload-log-max-bytes", type=int, default=DEFAULT_MAX_BYTES,
        help=f"rotate the payload log (to NAME.1, NAME.2, ...) at this size; 0: never (default {DEFAULT_MAX_BYTES})",
    )  # fmt: skip
    parser.add_argument(
        "--payload-log-keep", type=int, default=DEFAULT_KEEP,
        help=f"rotated payload log files kept besides the live one (default {DEFAULT_KEEP})",
    )  # fmt: skip
    parser.add_argument("--feedback-log", default=None, help="JSON-lines file of /feedback labels")
    control = parser.add_argument_group(
        "control", "promote, rollback, traffic and feedback, on a listener apart from the inference port"
    )
    control.add_argument(
        "--control-port", type=int, default=None, help="TCP port of the control listener (none if absent)"
    )
    control.add_argument(
        "--control-host", default=None,
        help="address of the control listener (default 127.0.0.1; off loopback it needs a token)",
    )  # fmt: skip
    control.add_argument("--control-socket", default=None, help="Unix socket of the control listener (instead of TCP)")
    control.add_argument(
        "--control-token-file", default=None,
        help=f"file holding the bearer token non-loopback control callers must send (else ${TOKEN_ENV})",
    )  # fmt: skip
    parser.add_argument("--no-batching", action="store_true", help="score each request alone (no micro-batching)")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0, help="longest wait to fill a micro-batch")
    parser.add_argument("--variant", default="stable", help=argparse.SUPPRESS)
    parser.add_argument("--worker-socket", default=None, help=argparse.SUPPRESS)  # set by the router only
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load the bundle(s) and serve until terminated; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    from hybridml.serving.sagemaker import is_serve

    if is_serve(argv):  # SageMaker runs the image with the argument `serve`
        from hybridml.serving.sagemaker import main as serve

        return serve(argv)
    args = build_parser().parse_args(argv)
    from hybridml.serving.runtime import run_server

    try:
        run_server(args, os.environ)
    except HybridmlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
