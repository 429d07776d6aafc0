"""Aravis's fake GigE Vision camera (`arv-fake-gv-camera-0.8`, Debian's aravis-tools) on loopback, for tests and
benchmarks: a real GVCP control channel and GVSP stream on 127.0.0.1.

The fake camera binds GVCP's fixed port 3956 on an interface's address (it refuses addresses the machine's
interfaces do not carry, so not 127.0.0.2), and also 255.255.255.255:3956 for discovery: one can run on a
machine at a time. A lock file makes concurrent test runs and benchmarks take turns instead of failing."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

FAKE_CAMERA = "arv-fake-gv-camera-0.8"
ADDRESS = "127.0.0.1"
GVCP_PORT = 3956
LOCK_PATH = Path(tempfile.gettempdir()) / "lineguard-fake-gv-camera.lock"
# GVCP DISCOVERY_CMD: key 0x42, flags (ack wanted), command 0x0002, no payload, request id 1.
DISCOVERY = bytes.fromhex("4211000200000001")


def fake_camera_installed() -> bool:
    return shutil.which(FAKE_CAMERA) is not None


class FakeGigeCamera:
    """One fake camera with `serial` on 127.0.0.1, started on enter and killed on exit; `kill()` and
    `start()` in between play a camera unplugged and plugged back. `lost_per_thousand` makes it drop stream
    packets (the receiver then asks for them again)."""

    def __init__(self, serial: str = "LG-FAKE-1", *, lost_per_thousand: int = 0, lock_timeout_s: float = 300):
        if not fake_camera_installed():
            raise RuntimeError(f"{FAKE_CAMERA} is not installed (Debian package aravis-tools)")
        self.serial = serial
        self.address = ADDRESS
        self.lost_per_thousand = lost_per_thousand
        self.lock_timeout_s = lock_timeout_s
        self._lock: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FakeGigeCamera:
        self._take_turn()
        try:
            self.start()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.kill()
        self._release()

    def start(self) -> None:
        command = [FAKE_CAMERA, "-i", self.address, "-s", self.serial]
        if self.lost_per_thousand:
            command += ["-r", str(self.lost_per_thousand)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self.answers():
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"{FAKE_CAMERA} exited with {self._process.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{FAKE_CAMERA} did not answer GVCP discovery on {self.address}:{GVCP_PORT}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Gone at once, as a pulled cable: no goodbye on the control channel."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def answers(self) -> bool:
        """True when a GVCP discovery sent straight to the camera's address gets its acknowledgement."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(DISCOVERY, (self.address, GVCP_PORT))
                reply, _ = sock.recvfrom(1024)
            except OSError:
                return False
        return len(reply) >= 8 and reply[2:4] == b"\x00\x03"  # DISCOVERY_ACK

    def _take_turn(self) -> None:
        fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o666)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError(
                        f"another fake GigE camera held {LOCK_PATH} for {self.lock_timeout_s:g} s"
                    ) from None
                time.sleep(0.1)
        self._lock = fd
        if self.answers():
            # A fake camera outside the lock (a developer's own) would answer for this one.
            self._release()
            raise RuntimeError(f"something already answers GVCP on {self.address}:{GVCP_PORT}: stop it first")

    def _release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                os.close(self._lock)
            self._lock = None
