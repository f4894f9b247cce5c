"""What moto cannot do, done on loopback: InvokeEndpoint answered by the project's predictor in SageMaker mode.

moto's sagemaker-runtime runs no model. This bridge plays SageMaker's part for a test: on InvokeEndpoint it
draws one production variant by its live weight (DescribeEndpoint -> DescribeEndpointConfig -> DescribeModel on the moto
server), downloads that model's ``model.tar.gz`` from moto's S3, unpacks it as SageMaker would into a model
directory, starts ``python -m hybridml.serving serve`` on it (one process per SageMaker model, kept until
:meth:`close`), and forwards the request body and content types to its ``POST /invocations``. A container
error comes back as SageMaker's ``ModelError`` (HTTP 424 with the original status and message). So a test sees
the archive layout, the request encoding and the answer parsing work with the real container, end to end.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.integration.sagemaker.motoserver import MotoServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Raw:
    """The raw stream botocore reads a response body from."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def stream(self, **_: Any) -> Any:
        yield self._data.read()

    def read(self, *args: Any, **_: Any) -> bytes:
        return self._data.read(*args)


class ContainerBridge:
    """Route a sagemaker-runtime client's InvokeEndpoint calls to predictor processes on loopback.

    Each call goes to one production variant, drawn by the endpoint's live weights (as SageMaker routes).
    """

    def __init__(self, moto: MotoServer, workdir: Path) -> None:
        self.moto = moto
        self.workdir = workdir
        self.containers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        self.invocations: list[dict[str, Any]] = []
        self.random = random.Random(0)

    def attach(self, runtime_client: Any) -> None:
        runtime_client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", self._send)

    def close(self) -> None:
        for process, _ in self.containers.values():
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.containers.clear()

    def _send(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        endpoint = request.url.split("/endpoints/", 1)[1].split("/", 1)[0]
        port = self._container(endpoint)
        headers = {
            k: v.decode() if isinstance(v, bytes) else v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "accept")
        }
        body = request.body if isinstance(request.body, bytes) else (request.body or b"")
        self.invocations.append({"endpoint": endpoint, "headers": dict(headers), "body": bytes(body)})
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/invocations", body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        if answer.status < 300:
            reply = {
                "Content-Type": answer.getheader("Content-Type", ""),
                "x-Amzn-Invoked-Production-Variant": "stable",
            }
            return AWSResponse(request.url, 200, reply, _Raw(data))
        error = {
            "message": f'Received client error ({answer.status}) from primary with message "{data.decode()[:200]}"',
            "OriginalStatusCode": answer.status,
            "OriginalMessage": data.decode(errors="replace"),
        }
        headers = {"x-amzn-ErrorType": "ModelError:", "Content-Type": "application/json"}
        return AWSResponse(request.url, 424, headers, _Raw(json.dumps(error).encode()))

    def _container(self, endpoint: str) -> int:
        sm, s3 = self.moto.client("sagemaker"), self.moto.client("s3")
        described_endpoint = sm.describe_endpoint(EndpointName=endpoint)
        weights = {
            v["VariantName"]: float(v.get("DesiredWeight", v.get("CurrentWeight", 0)))
            for v in described_endpoint["ProductionVariants"]
        }
        variants = sm.describe_endpoint_config(EndpointConfigName=described_endpoint["EndpointConfigName"])
        models = {v["VariantName"]: v["ModelName"] for v in variants["ProductionVariants"]}
        # As SageMaker does: each request goes to a production variant drawn by weight (seeded here).
        names = [n for n in models if weights.get(n, 0) > 0] or list(models)
        chosen = self.random.choices(names, weights=[weights.get(n, 0) or 1 for n in names])[0]
        model = models[chosen]
        if model in self.containers:
            return self.containers[model][1]
        described = sm.describe_model(ModelName=model)
        url = described["PrimaryContainer"]["ModelDataUrl"]
        bucket, key = url.removeprefix("s3://").split("/", 1)
        archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        model_dir = self.workdir / model / "opt-ml-model"
        model_dir.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(model_dir, filter="data")  # what SageMaker does with model.tar.gz
        port = _free_port()
        env = {**os.environ, **described["PrimaryContainer"].get("Environment", {})}
        env.update(SM_MODEL_DIR=str(model_dir), SAGEMAKER_BIND_TO_PORT=str(port))
        log = (self.workdir / f"{model}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "hybridml.serving", "serve", "--no-batching"], env=env, stdout=log, stderr=log
        )
        self.containers[model] = (process, port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"container for {model} exited with {process.returncode}; see {log.name}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    return port
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"container for {model} did not answer /ping within 60 s; see {log.name}")


def emulate_update_endpoint(moto: MotoServer) -> Any:
    """A ``before-call.sagemaker.UpdateEndpoint`` handler that does, on moto, what UpdateEndpoint ends in.

    moto raises NotImplementedError for UpdateEndpoint. This recreates the endpoint (same name and tags) on
    the new endpoint config, which is the state a successful blue/green update leaves: ``InService`` on the
    new config, weights from its variants. What it cannot show (the traffic shift, baking, alarms) is
    asserted request by request in tests/unit/test_sagemaker_stubbed.py.
    """
    from botocore.awsrequest import AWSResponse

    raw = moto.client("sagemaker")

    def update(params: dict[str, Any], **_: Any) -> Any:
        request = json.loads(params["body"])
        name, config = request["EndpointName"], request["EndpointConfigName"]
        tags = raw.list_tags(ResourceArn=raw.describe_endpoint(EndpointName=name)["EndpointArn"])["Tags"]
        raw.delete_endpoint(EndpointName=name)
        arn = raw.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=tags)["EndpointArn"]
        return AWSResponse(moto.url, 200, {}, _Raw(b"")), {"EndpointArn": arn}

    return update
