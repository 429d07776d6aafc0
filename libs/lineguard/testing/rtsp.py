"""A real RTSP server on loopback for tests and benchmarks: GStreamer's gst-rtsp-server (Debian's
gir1.2-gst-rtsp-server-1.0, x264enc from gstreamer1.0-plugins-ugly, rtph264pay from -plugins-good) serving a live
H.264 test pattern, in a process of its own so a test can stop it mid-run (`kill()`, `start()` again on the same
port) or freeze it (`pause()`: the connection stays open and no frame comes, a stalled camera).

`python -m lineguard.testing.rtsp --port P` runs the server itself."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType

from lineguard.natsserver import free_port

ADDRESS = "127.0.0.1"
MOUNT = "/cam"
PACKAGES = "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"


def _gst() -> tuple[object, object]:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer

    return Gst, GstRtspServer


def rtsp_server_missing() -> str | None:
    """Why the test server cannot run here (None when it can).

    Asked of a process of its own: GStreamer initialised in the test process loads its plugins' libraries there,
    and a later import of matplotlib's ft2font (ultralytics' training) then aborted the whole test run."""
    done = subprocess.run(
        [sys.executable, "-m", "lineguard.testing.rtsp", "--check"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"the GStreamer check failed ({done.stderr.strip()[-300:]})"
    return done.stdout.strip() or None


def _missing_here() -> str | None:
    try:
        gst, _ = _gst()
    except (ImportError, ValueError) as exc:
        return f"GStreamer's RTSP server is not installed ({exc}): apt-get install {PACKAGES}"
    gst.init(None)  # type: ignore[attr-defined]
    missing = [name for name in ("x264enc", "rtph264pay") if gst.ElementFactory.find(name) is None]  # type: ignore[attr-defined]
    return f"GStreamer elements {', '.join(missing)} are missing: apt-get install {PACKAGES}" if missing else None


class RtspTestServer:
    """The server on 127.0.0.1:`port` (a free one by default), started on enter and killed on exit."""

    def __init__(self, *, port: int = 0, width: int = 640, height: int = 480, fps: int = 25):
        self.port = port or free_port(ADDRESS)
        self.width, self.height, self.fps = width, height, fps
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://{ADDRESS}:{self.port}{MOUNT}"

    def __enter__(self) -> RtspTestServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.kill()

    def start(self, timeout_s: float = 15.0) -> RtspTestServer:
        args = [sys.executable, "-m", "lineguard.testing.rtsp", "--port", str(self.port)]
        args += ["--width", str(self.width), "--height", str(self.height), "--fps", str(self.fps)]
        self._process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "ready" once it listens
        if line.strip() != b"ready":
            self.kill()
            raise RuntimeError(f"the RTSP test server did not start (said {line!r})")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((ADDRESS, self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the RTSP test server does not listen on {ADDRESS}:{self.port}")

    def kill(self) -> None:
        """Gone at once, as a camera unplugged: its connections reset."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGCONT)
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def pause(self) -> None:
        """Frozen: the connection stays open and no frame comes (a stalled stream)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="print why the server cannot run here, if it cannot")
    parser.add_argument("--port", type=int)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    if args.check:
        print(_missing_here() or "")
        return
    if args.port is None:
        parser.error("--port is required")
    gst, rtsp = _gst()
    from gi.repository import GLib

    gst.init(None)  # type: ignore[attr-defined]
    server = rtsp.RTSPServer()  # type: ignore[attr-defined]
    server.set_address(ADDRESS)
    server.set_service(str(args.port))
    factory = rtsp.RTSPMediaFactory()  # type: ignore[attr-defined]
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},height={args.height},"
        f"framerate={args.fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
        "! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(True)  # every client sees the same live stream, as from a camera
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on {ADDRESS}:{args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
