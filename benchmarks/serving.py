"""Serving benchmark: this server vs a stock KServe xgbserver-style model, same model and payloads, wrk load.

Run: ``.venv/bin/python benchmarks/serving.py [--duration 3]``. Needs ``wrk`` and ``taskset`` (Debian: wrk,
util-linux). The server is pinned to CPU 0, wrk to CPU 1.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

STOCK = textwrap.dedent(
    """
    import sys
    import numpy as np
    import kserve
    import xgboost as xgb
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class Stock(kserve.Model):  # what kserve's xgbserver does: a DMatrix per request, nthread=1
        def __init__(self, name, path):
            super().__init__(name)
            self.path = path
        def load(self):
            self.booster = xgb.Booster(params={"nthread": 1}, model_file=self.path)
            self.ready = True
            return True
        def predict(self, payload, headers=None, response_headers=None):
            if isinstance(payload, InferRequest):
                scores = self.booster.predict(xgb.DMatrix(payload.inputs[0].as_numpy()))
                out = InferOutput(name="probability", shape=[len(scores)], datatype="FP32", data=scores.tolist())
                return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)
            return {"predictions": self.booster.predict(xgb.DMatrix(np.asarray(payload["instances"]))).tolist()}

    if __name__ == "__main__":
        name, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        del sys.argv[1:]
        model = Stock(name, path)
        model.load()
        kserve.ModelServer(http_port=port, workers=1, enable_grpc=False).start([model])
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_model(directory: Path) -> tuple[Path, list[float]]:
    from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
    from hybridml.core.model import fit, save_bundle

    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    model = fit("xgboost", {}, encode_features(frame, schema), encode_labels(frame, schema))  # 200 trees, depth 4
    save_bundle(model, "xgboost", {}, schema, directory)
    return directory, [float(v) for v in frame[schema.names].iloc[0]]


def start(command: list[str], ready_url: str, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    begin = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(["taskset", "-c", "0", *command], stdout=out, stderr=subprocess.STDOUT)
    while time.monotonic() - begin < 120:
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as response:
                if response.status == 200:
                    return process, time.monotonic() - begin
        except OSError:
            time.sleep(0.005)
    process.kill()
    raise SystemExit(f"not ready: {command}\n{log.read_text()[-2000:]}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wrk(url: str, body: bytes, connections: int, duration: float, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    (workdir / "body.json").write_bytes(body)
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{workdir / "body.json"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    seconds = f"{max(1, round(duration))}s"
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}", "--latency", "-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "non2xx": float(errors.group(1)) if errors else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--skip-stock", action="store_true", help="only this server")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("needs wrk and taskset (apt-get install wrk util-linux)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    bundle, row = build_model(work / "bundle")
    v1 = json.dumps({"instances": [row]}).encode()
    v2 = json.dumps({"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}).encode()
    name, results, servers = "bench", {}, {}
    try:
        for label, extra in (("hybridml", []), ("hybridml-unbatched", ["--no-batching"])):
            port = free_port()
            command = [sys.executable, "-m", "hybridml.serving", "--model-dir", str(bundle), "--model-name", name,
                       "--bind-port", str(port), *extra]  # fmt: skip
            process, ready = start(command, f"http://127.0.0.1:{port}/v2/health/ready", work / f"{label}.log")
            servers[label] = (process, port, ready, rss_mib(process.pid))
        if not args.skip_stock:
            (work / "stock.py").write_text(STOCK)
            port = free_port()
            command = [sys.executable, str(work / "stock.py"), name, str(bundle / "model.json"), str(port)]
            process, ready = start(command, f"http://127.0.0.1:{port}/v2/health/ready", work / "stock.log")
            servers["kserve-stock"] = (process, port, ready, rss_mib(process.pid))
        plan = [("hybridml", "v1", c) for c in (1, 8, 64)] + [("hybridml", "v2", 8), ("hybridml-unbatched", "v1", 64)]
        if not args.skip_stock:
            plan += [("kserve-stock", "v1", c) for c in (1, 8, 64)] + [("kserve-stock", "v2", 8)]
        for label, proto, c in plan:
            port = servers[label][1]
            url = f"http://127.0.0.1:{port}" + (
                f"/v1/models/{name}:predict" if proto == "v1" else f"/v2/models/{name}/infer"
            )
            results[(label, proto, c)] = r = wrk(url, v1 if proto == "v1" else v2, c, args.duration, work)
            latency = f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  non-2xx {r['non2xx']:.0f}"
            print(f"{label:20s} {proto} c={c:<3d} {r['rps']:9.0f} req/s  {latency}", flush=True)
    finally:
        for process, *_ in servers.values():
            process.terminate()
            process.wait(timeout=20)
    print()
    for label, (_, _, ready, rss) in servers.items():
        print(f"{label:20s} start-to-ready {ready:.2f} s   RSS with one model {rss:.0f} MiB")
    if not args.skip_stock:
        for proto, c in (("v1", 1), ("v1", 8), ("v1", 64), ("v2", 8)):
            ratio = results[("hybridml", proto, c)]["rps"] / results[("kserve-stock", proto, c)]["rps"]
            print(f"ratio hybridml/stock {proto} c={c}: {ratio:.1f}x")
    batched = results[("hybridml", "v1", 64)]["rps"] / results[("hybridml-unbatched", "v1", 64)]["rps"]
    print(f"micro-batching at c=64: {batched:.2f}x unbatched")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
