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

# What kserve's xgbserver does: kserve's own request/response helpers and a DMatrix per request, nthread=1.
# (An earlier version built InferResponse by hand with the request's id, which is None when the client sends
# none; kserve 0.21 then fails response validation and answers 500 to every V2 request.)
STOCK = textwrap.dedent(
    """
    import sys
    import kserve
    import xgboost as xgb
    from kserve.utils.utils import get_predict_input, get_predict_response

    class Stock(kserve.Model):
        def __init__(self, name, path):
            super().__init__(name)
            self.path = path
        def load(self):
            self.booster = xgb.Booster(params={"nthread": 1}, model_file=self.path)
            self.ready = True
            return True
        def predict(self, payload, headers=None, response_headers=None):
            scores = self.booster.predict(xgb.DMatrix(get_predict_input(payload), nthread=1))
            return get_predict_response(payload, scores, self.name)

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
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "requests": total,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
    }


def check_answers(url: str, body: bytes) -> None:
    """Fail before measuring if a server does not answer this exact payload with 200 and one score."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{url} answered {exc.code}: {exc.read()[:300]!r}") from None
    scores = answer.get("predictions") or answer.get("outputs", [{}])[0].get("data")
    if not scores or len(scores) != 1:
        raise SystemExit(f"{url} answered without one score: {answer}")


def failed(result: dict[str, float]) -> int:
    """Requests of a run that did not get a 2xx answer (non-2xx responses and socket errors)."""
    return int(result["non2xx"] + result["socket_errors"])


def ratio(
    results: dict[tuple[str, str, int], dict[str, float]], mine: tuple[str, str, int], base: tuple[str, str, int]
) -> str:
    """``mine``/``base`` req/s, or why there is no trustworthy ratio."""
    bad = [f"{' '.join(map(str, key))}: {failed(results[key])} failed" for key in (mine, base) if failed(results[key])]
    if bad:
        return "not computed (" + "; ".join(bad) + ")"
    return f"{results[mine]['rps'] / results[base]['rps']:.1f}x"


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
    bodies = {
        "v1": json.dumps({"instances": [row]}).encode(),
        # FP32 [1, F] with the row flat in "data" (row-major), as the V2 protocol specifies.
        "v2": json.dumps({"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}).encode(),
    }
    name, results, servers = "bench", {}, {}
    paths = {"v1": f"/v1/models/{name}:predict", "v2": f"/v2/models/{name}/infer"}
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
        for _, port, _, _ in servers.values():
            for proto, path in paths.items():
                check_answers(f"http://127.0.0.1:{port}{path}", bodies[proto])
        labels = ["hybridml"] + ([] if args.skip_stock else ["kserve-stock"])
        plan = [(label, proto, c) for label in labels for proto in ("v1", "v2") for c in (1, 8, 64)]
        plan += [("hybridml-unbatched", proto, 64) for proto in ("v1", "v2")]
        print(f"{'server':20s} proto conns      req/s   p50 ms   p99 ms  requests  failed", flush=True)
        for label, proto, c in plan:
            url = f"http://127.0.0.1:{servers[label][1]}{paths[proto]}"
            results[(label, proto, c)] = r = wrk(url, bodies[proto], c, args.duration, work)
            print(
                f"{label:20s} {proto:5s} {c:5d} {r['rps']:10.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f}"
                f" {r['requests']:9.0f} {failed(r):7d}",
                flush=True,
            )
    finally:
        for process, *_ in servers.values():
            process.terminate()
            process.wait(timeout=20)
    print()
    for label, (_, _, ready, rss) in servers.items():
        print(f"{label:20s} start-to-ready {ready:.2f} s   RSS with one model {rss:.0f} MiB")
    if not args.skip_stock:
        for proto in ("v1", "v2"):
            for c in (1, 8, 64):
                figure = ratio(results, ("hybridml", proto, c), ("kserve-stock", proto, c))
                print(f"ratio hybridml/stock {proto} c={c}: {figure}")
    for proto in ("v1", "v2"):
        batched = ratio(results, ("hybridml", proto, 64), ("hybridml-unbatched", proto, 64))
        print(f"micro-batching {proto} at c=64: {batched} unbatched")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
