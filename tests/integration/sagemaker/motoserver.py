"""A real ``moto_server`` process on 127.0.0.1 (moto[server]), and boto3 clients pointed at it.

Shared by the SageMaker integration tests and the deploy contract suite's sagemaker harness. The server
process is started once per test session by whoever asks first and stopped at exit; tests that need a
clean account call :func:`reset` (moto's ``/moto-api/reset``) and recreate their bucket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridml.deploy.config import SageMakerConfig

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/hybridml-sagemaker"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hybridml-predictor:test"
BUCKET = "hybridml-models"


@dataclass(frozen=True)
class MotoServer:
    """A running moto server: its URL and the environment that points boto3 at it."""

    url: str
    env: dict[str, str]

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self) -> None:
        """Forget every resource (all services), then recreate the model bucket."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass
        self.client("s3").create_bucket(Bucket=BUCKET)

    def queue_invoke_results(self, bodies: list[str], content_type: str = "application/json") -> None:
        """Queue the answers moto's sagemaker-runtime gives to the next new InvokeEndpoint bodies, in order."""
        payload = {
            "region": REGION,
            "results": [
                {"Body": body, "ContentType": content_type, "InvokedProductionVariant": "stable"} for body in bodies
            ],
        }
        request = urllib.request.Request(
            f"{self.url}/moto-api/static/sagemaker/endpoint-results",
            method="POST",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


def config(**overrides: Any) -> SageMakerConfig:
    """A deployable config for moto: fast budgets, no blue/green waits."""
    settings: dict[str, Any] = {
        "image_uri": IMAGE_URI,
        "role_arn": ROLE_ARN,
        "bucket": BUCKET,
        "ready_timeout_s": 20.0,
        "poll_s": 0.5,
        "canary_wait_s": 0,
        "termination_wait_s": 0,
    }
    settings.update(overrides)
    return SageMakerConfig(**settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(log_dir: Path) -> Iterator[MotoServer]:
    """Start ``moto_server`` on a free loopback port, wait until it answers, stop it afterwards."""
    port = _free_port()
    executable = Path(sys.executable).with_name("moto_server")
    log = (log_dir / "moto_server.log").open("wb")
    process = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
        yield MotoServer(url=url, env=env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def environ_without_aws() -> dict[str, str]:
    """The process environment without AWS settings (so no test ever reaches a real account)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
