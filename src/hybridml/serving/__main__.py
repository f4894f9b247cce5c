"""Model server entry point: ``python -m hybridml.serving --model-dir DIR --model-name NAME --bind-port PORT``."""

from __future__ import annotations

import argparse
import sys

from hybridml.errors import HybridmlError
from hybridml.serving.predictor import DEFAULT_MAX_ROWS


def build_parser() -> argparse.ArgumentParser:
    """The server's flags; dashed names so none is taken for one of KServe's own underscored flags."""
    parser = argparse.ArgumentParser(
        prog="python -m hybridml.serving", description="Serve a hybridml model bundle with KServe.", allow_abbrev=False
    )
    parser.add_argument("--model-dir", required=True, help="bundle directory (hybridml.json + model file)")
    parser.add_argument("--model-name", required=True, help="name in the URL: /v2/models/NAME/infer")
    parser.add_argument("--model-version", default="", help="version reported in the X-Hybridml-Version header")
    parser.add_argument("--bind-host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--bind-port", type=int, default=8080, help="HTTP port")
    parser.add_argument("--canary-dir", default=None, help="optional canary bundle served under the same name")
    parser.add_argument("--canary-version", default="", help="version of the canary bundle")
    parser.add_argument("--canary-percent", type=int, default=0, help="share of requests (0-100) the canary answers")
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the stable/canary random split")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="largest batch accepted per request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load the bundle(s) and serve until terminated; returns the exit code."""
    args = build_parser().parse_args(argv)
    # `import kserve` parses sys.argv with its own parser; hand it none of our flags so it keeps its defaults.
    del sys.argv[1:]
    from hybridml.serving.kserve_model import HybridmlModel, serve

    try:
        model = HybridmlModel(
            args.model_name,
            args.model_dir,
            version=args.model_version,
            canary_dir=args.canary_dir,
            canary_version=args.canary_version,
            canary_percent=args.canary_percent,
            seed=args.split_seed,
            max_rows=args.max_rows,
        )
        serve(model, host=args.bind_host, port=args.bind_port)
    except HybridmlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
