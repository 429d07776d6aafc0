"""The built images run as ops run them, with podman here (docs/deploy.md, What CI runs): containers on the host's
network (this machine's bridge networks are not to be had), each service's command, secrets and mounts taken from
docker-compose.yml, its readiness polled, its logs kept for the failure message."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lineguard.bus.streams import line_streams
from lineguard.config import NatsSettings


def _checkout() -> Path:
    """The lineguard checkout the deploy files are in: this module's (an editable install) or the working
    directory's (CI installs the package into site-packages and runs the tests from the checkout)."""
    for start in (Path(__file__).resolve().parents[3], Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "scripts" / "build-images").is_file() and (folder / "docker-compose.yml").is_file():
                return folder
    raise FileNotFoundError(
        f"no lineguard checkout (scripts/build-images, docker-compose.yml) above {Path(__file__).parent} or the "
        f"working directory {Path.cwd()}: the deploy tests run from a checkout"
    )


ROOT = _checkout()
# crun refuses this kernel's hybrid cgroups, and the default ulimits cannot be set here (scripts/build-images).
PODMAN = ("podman", "--runtime", "runc")
RUN_FLAGS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network", "host")
IMAGE_UID = 10001  # the images' lineguard user (deploy/images/Containerfile)


def deploy_tests_enabled() -> bool:
    """The deploy tests run in CI always and on a developer's machine when asked (LINEGUARD_DEPLOY_TESTS=1)."""
    return os.environ.get("CI") == "true" or os.environ.get("LINEGUARD_DEPLOY_TESTS") == "1"


def image(name: str) -> str:
    version = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-service"]["image"].rsplit(":", 1)[1]
    return f"localhost/lineguard/{name}:{version}"


IMAGES = ("capture", "inference", "ocr", "decision", "gateway", "results", "tools")


def build_images(timeout_s: float = 720) -> None:
    """scripts/build-images: the base and every CPU image (podman's layer cache makes a rebuild quick).
    LINEGUARD_REUSE_IMAGES=1 (a developer rerunning the stack, never CI) runs the images already built, if all are."""
    if os.environ.get("LINEGUARD_REUSE_IMAGES") == "1" and all(
        subprocess.run([*PODMAN, "image", "exists", image(name)], check=False).returncode == 0 for name in IMAGES
    ):
        return
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-images")], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"scripts/build-images failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def compose_service(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name])


def compose_secret_mounts(name: str, secrets_root: Path) -> list[tuple[Path, str]]:
    """(host file, container path) of each secret the compose service mounts; compose's ./deploy/secrets/... files
    are looked for under `secrets_root` instead."""
    top = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["secrets"]
    mounts = []
    for secret in compose_service(name).get("secrets", []):
        source, target = (
            (secret, f"/run/secrets/{secret}") if isinstance(secret, str) else (secret["source"], secret["target"])
        )
        relative = Path(top[source]["file"]).relative_to("deploy/secrets")
        mounts.append((secrets_root / relative, target))
    return mounts


def readable_by_the_image(path: Path) -> Path:
    """Hand a file or folder to the images' user, as an operator does for a mounted secret or volume."""
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(item, IMAGE_UID, IMAGE_UID)
    return path


@dataclass
class Container:
    name: str

    def inspect(self) -> dict[str, Any]:
        out = subprocess.run([*PODMAN, "inspect", self.name], capture_output=True, text=True, check=True).stdout
        return dict(json.loads(out)[0])

    @property
    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    @property
    def restarts(self) -> int:
        return int(self.inspect().get("RestartCount", 0))

    def logs(self) -> str:
        done = subprocess.run([*PODMAN, "logs", self.name], capture_output=True, text=True, check=False)
        return done.stdout + done.stderr

    def wait(self, timeout_s: float) -> int:
        """The exit code once it has stopped."""
        done = subprocess.run(
            [*PODMAN, "wait", self.name], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        return int(done.stdout.strip().splitlines()[-1])

    def healthcheck(self) -> bool:
        """The image's own HEALTHCHECK, run now."""
        return (
            subprocess.run([*PODMAN, "healthcheck", "run", self.name], capture_output=True, check=False).returncode == 0
        )


@dataclass
class Stack:
    """Containers of one test run, removed together at the end."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    containers: list[Container] = field(default_factory=list)

    def run(
        self,
        name: str,
        image_name: str,
        command: Sequence[str],
        *,
        mounts: Sequence[tuple[Path, str]] = (),
        env: dict[str, str] | None = None,
        restart: str = "no",
    ) -> Container:
        container = Container(f"lg-{self.run_id}-{name}")
        args = [*PODMAN, "run", "--detach", "--name", container.name, *RUN_FLAGS, f"--restart={restart}"]
        for host, target in mounts:
            args += ["--volume", f"{host}:{target}:ro" if host.is_file() else f"{host}:{target}"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        done = subprocess.run([*args, image(image_name), *command], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise AssertionError(f"podman run {name} failed ({done.returncode}): {done.stderr.strip()}")
        self.containers.append(container)
        return container

    def logs(self) -> str:
        return "\n".join(f"--- {c.name}\n{c.logs()[-3000:]}" for c in self.containers)

    def remove(self) -> None:
        for container in reversed(self.containers):
            subprocess.run([*PODMAN, "rm", "--force", "--time", "5", container.name], capture_output=True, check=False)


@contextmanager
def stack() -> Iterator[Stack]:
    running = Stack()
    try:
        yield running
    finally:
        running.remove()


def http_status(url: str) -> tuple[int, str]:
    """(status, body); 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_ready(url: str, timeout_s: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_status(url)[0] == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout_s:g} s: {http_status(url)}\n{stack.logs()}")


def podman_present() -> bool:
    return shutil.which("podman") is not None and shutil.which("runc") is not None


def jetstream_store_bytes(nats_conf: str) -> int:
    """A nats-server config's JetStream store (max_file_store, in bytes), which must be set: left out, nats-server
    takes 75% of the disk free at its start, so a fuller disk refuses streams that fitted the day before."""
    found = re.search(r"jetstream\s*\{[^}]*max_file_store:\s*(\d+)", nats_conf)
    assert found, "no max_file_store (in bytes) in the config's jetstream block"
    return int(found.group(1))


def reserved_stream_bytes(settings: NatsSettings) -> int:
    """What JetStream reserves for the line's streams as provisioning makes them (each stream's max_bytes; it refuses
    a stream beyond the store: "insufficient storage resources available"). The buckets are unlimited: not reserved."""
    return sum(spec.max_bytes for spec in line_streams(settings))
