"""Both images, built with buildah (scripts/build_images.sh) and started: the predictor answers KServe's client.

The images are built once per session when missing (`make images`; minutes cold). The predictor container runs
its own ENTRYPOINT under `buildah run --isolation chroot`, as UID 1000, with a real bundle bind-mounted read-only
at /mnt/models; it shares the host's network, so it is told to bind 127.0.0.1 on a free port. Select with
`-m images`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.serving.client import is_ready
from hybridml.serving.predictor import BundlePredictor

pytestmark = [pytest.mark.integration, pytest.mark.images, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "build_images.sh"
PIPELINE_IMAGE = "ghcr.io/hybridml/hybridml:0.1.0"
PREDICTOR_IMAGE = "ghcr.io/hybridml/predictor:0.1.0"
NAME = "model"
PIPELINE_ONLY = ("mlflow", "kfp", "optuna", "pandas", "pyarrow", "matplotlib", "typer", "rich", "kserve")
PREDICTOR_NEEDS = ("xgboost", "sklearn", "skops", "uvicorn", "numpy", "orjson", "prometheus_client", "boto3")


def buildah(*args: str, timeout: float = 300) -> str:
    """``buildah ARGS`` on the build script's own storage; returns stdout, fails the test with stderr on error."""
    done = subprocess.run([str(SCRIPT), "buildah", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"buildah {' '.join(args[:3])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _has_image(name: str) -> bool:
    probe = [str(SCRIPT), "buildah", "inspect", "--type", "image", name]
    return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0


@pytest.fixture(scope="session")
def images() -> dict[str, dict[str, Any]]:
    """Each image's OCI config, after building both with scripts/build_images.sh if either is missing."""
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: apt-get install buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("building images with debootstrap and chroot isolation needs root")
    if not (_has_image(PIPELINE_IMAGE) and _has_image(PREDICTOR_IMAGE)):
        done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=3000)
        assert done.returncode == 0, f"scripts/build_images.sh failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(subprocess.run([str(SCRIPT), "sizes"], capture_output=True, text=True, check=True, timeout=120).stdout)
    configs = {}
    for image in (PIPELINE_IMAGE, PREDICTOR_IMAGE):
        configs[image] = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    return configs


@pytest.fixture
def container(images: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """``container(image)`` makes a working container of IMAGE (removed after the test) and returns its name."""
    made: list[str] = []

    def make(image: str) -> str:
        made.append(buildah("from", "--pull=never", "--quiet", image).strip().splitlines()[-1])
        return made[-1]

    yield make
    for name in made:
        subprocess.run([str(SCRIPT), "buildah", "rm", name], capture_output=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    model = fit("xgboost", {"n_estimators": 10}, encode_features(frame, schema), encode_labels(frame, schema))
    directory = tmp_path_factory.mktemp("bundle") / "xgb"
    save_bundle(model, "xgboost", {"n_estimators": 10}, schema, directory)
    # The container runs as UID 1000: the mounted bundle must be readable by others.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


@pytest.fixture(scope="module")
def rows(bundle: Path) -> list[list[float]]:
    frame, _ = builtin_breast_cancer()
    return frame[BundlePredictor.load(bundle).schema.names].iloc[::40].to_numpy().tolist()


@pytest.fixture(scope="module")
def predictor(
    images: dict[str, dict[str, Any]], bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The predictor image's own ENTRYPOINT, flags for a loopback port and the mounted model appended."""
    config = images[PREDICTOR_IMAGE]
    name = buildah("from", "--pull=never", "--quiet", PREDICTOR_IMAGE).strip().splitlines()[-1]
    port = _free_port()
    log = tmp_path_factory.mktemp("predictor") / "predictor.log"
    # argparse keeps the last value: these flags override the entrypoint's 0.0.0.0:8080 (the host's network).
    flags = ["--bind-host", "127.0.0.1", "--bind-port", str(port), "--model-uri", "file:///mnt/models"]
    # In a PID namespace of its own: when its first process dies the kernel kills every process in it, so no
    # predictor outlives the test (tini gives the server a process group of its own, out of reach of killpg).
    command = ["unshare", "--pid", "--fork", "--kill-child", str(SCRIPT), "buildah", "run", "--isolation", "chroot"]
    command += ["--user", config["User"]]
    command += ["-v", f"{bundle}:/mnt/models:ro", name, "--", *config["Entrypoint"], *flags, "--model-name", NAME]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        start = time.monotonic()
        while not is_ready(endpoint, NAME, timeout_s=0.5):
            if process.poll() is not None or time.monotonic() - start > 120:
                pytest.fail(f"predictor container not ready (exit {process.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        print(f"predictor container ready after {time.monotonic() - start:.1f}s")
        yield endpoint
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        subprocess.run([str(SCRIPT), "buildah", "rm", name], capture_output=True, timeout=300)


def test_predictor_image_config_is_non_root_exec_form(images: dict[str, dict[str, Any]]) -> None:
    config = images[PREDICTOR_IMAGE]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == [
        "/usr/bin/tini", "--", "/opt/venv/bin/python", "-m", "hybridml.serving", "--bind-host", "0.0.0.0",
        "--bind-port", "8080",
    ]  # fmt: skip
    assert config["Cmd"] == ["--model-uri", "file:///mnt/models", "--model-name", "model"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert (env["PYTHONDONTWRITEBYTECODE"], env["HOME"], env["TMPDIR"]) == ("1", "/tmp", "/tmp")
    assert images[PIPELINE_IMAGE]["User"] == "1000:1000"


def test_predictor_image_holds_only_what_the_predictor_imports(container: Any) -> None:
    probe = (
        "import importlib.util, json, sys;"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    name = container(PREDICTOR_IMAGE)
    out = buildah("run", "--isolation", "chroot", name, "--", "python", "-c", probe, *PIPELINE_ONLY, *PREDICTOR_NEEDS)
    found = json.loads(out.strip().splitlines()[-1])
    assert {m for m, present in found.items() if present} == set(PREDICTOR_NEEDS)


def test_v1_over_kserve_client_matches_in_process(predictor: str, bundle: Path, rows: list[list[float]]) -> None:
    from kserve import InferenceRESTClient, RESTConfig

    async def infer() -> dict[str, Any]:
        rest = InferenceRESTClient(RESTConfig(protocol="v1", timeout=10))
        try:
            result = await rest.infer(predictor, {"instances": rows}, model_name=NAME)
        finally:
            await rest._client.aclose()
        assert isinstance(result, dict)
        return result

    result = asyncio.run(infer())
    np.testing.assert_allclose(result["predictions"], BundlePredictor.load(bundle).predict(rows), atol=1e-6)


def test_v2_over_kserve_client_matches_in_process(predictor: str, bundle: Path, rows: list[list[float]]) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def infer() -> Any:
        tensor = InferInput(name="x", shape=[len(rows), len(rows[0])], datatype="FP64")
        tensor.set_data_from_numpy(np.asarray(rows, dtype=np.float64), binary_data=False)
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
        try:
            return await rest.infer(predictor, InferRequest(model_name=NAME, infer_inputs=[tensor]), model_name=NAME)
        finally:
            await rest._client.aclose()

    result = asyncio.run(infer())
    output = result.outputs[0]
    assert (output.name, output.datatype, output.shape) == ("probability", "FP64", [len(rows)])
    np.testing.assert_allclose(output.as_numpy(), BundlePredictor.load(bundle).predict(rows), atol=1e-6)


def test_bad_payload_is_400_with_its_reason(predictor: str) -> None:
    from kserve import InferenceRESTClient, RESTConfig

    async def infer() -> None:
        rest = InferenceRESTClient(RESTConfig(protocol="v1", timeout=10))
        try:
            await rest.infer(predictor, {"instances": [[1, 2, 3]]}, model_name=NAME)
        finally:
            await rest._client.aclose()

    with pytest.raises(httpx.HTTPStatusError) as caught:
        asyncio.run(infer())
    assert caught.value.response.status_code == 400
    assert "row 0 has 3 values, model expects 30" in caught.value.response.json()["error"]


def test_pipeline_image_compiles_the_committed_pipeline(container: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # written by UID 1000 inside the container
    name = container(PIPELINE_IMAGE)
    run = ["run", "--isolation", "chroot", "--user", "1000:1000", "-v", f"{out}:/out"]
    run += ["-e", "HYBRIDML_DAEMON=0", "-e", "HYBRIDML_HOME=/tmp/hybridml-test", name, "--"]
    probe = "import getpass, os, hybridml.steps.prepare; print(os.getuid(), getpass.getuser())"
    who = buildah(*run, "python", "-c", probe)
    assert who.strip().splitlines()[-1] == "1000 hybridml"
    buildah(*run, "hybridml", "compile", "-o", "/out/pipeline.yaml")
    committed = ROOT / "src" / "hybridml" / "pipelines" / "hybridml_training.yaml"
    assert (out / "pipeline.yaml").read_text() == committed.read_text(), (
        "the image compiles a different pipeline than the committed YAML: rebuild it (make images) or run make compile"
    )


# The container's root is the image's rootfs bound read-only, /tmp a tmpfs, the model bound read-only, as UID 1000
# (what a pod with readOnlyRootFilesystem and an emptyDir at /tmp gets); buildah run cannot make the root read-only.
READ_ONLY_RUN = """set -e
root="$1"; rootfs="$2"; model="$3"; port="$4"; shift 4
mount --bind "$rootfs" "$root"; mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; mount -t tmpfs tmpfs "$root/tmp"
mount --bind -o ro "$model" "$root/mnt"
if touch "$root/probe" 2>/dev/null; then echo "root is writable"; exit 1; fi
env -i "$@" /usr/sbin/chroot --userspec=1000:1000 "$root" /usr/bin/tini -s -- /opt/venv/bin/python -m hybridml.serving \
    --bind-host 127.0.0.1 --bind-port "$port" --model-uri file:///mnt --model-name model &
for _ in $(seq 120); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/v2/models/model/ready" && break; sleep 0.5
done
curl -s -w ' %{http_code}\\n' "http://127.0.0.1:$port/v2/models/model/ready"
curl -s -w ' %{http_code}\\n' -X POST -d '{"instances": [[1, 2, 3]]}' "http://127.0.0.1:$port/v1/models/model:predict"
kill %1; wait %1 || true
"""


def test_predictor_serves_from_a_read_only_root(
    images: dict[str, dict[str, Any]], container: Any, bundle: Path, tmp_path: Path
) -> None:
    if shutil.which("unshare") is None or shutil.which("curl") is None:
        pytest.skip("unshare (util-linux) and curl are needed to start the container with a read-only root")
    name = container(PREDICTOR_IMAGE)
    rootfs = buildah("mount", name).strip()
    root = tmp_path / "root"
    root.mkdir()
    env = list(images[PREDICTOR_IMAGE]["Env"])
    command = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "bash", "-c", READ_ONLY_RUN, "run"]
    try:
        done = subprocess.run(
            [*command, str(root), rootfs, str(bundle), str(_free_port()), *env],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        buildah("umount", name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-2:] == [
        '{"name":"model","ready":true} 200',
        '{"error":"row 0 has 3 values, model expects 30 features"} 400',
    ], done.stderr
