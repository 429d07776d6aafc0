"""`lineguard camera`: a controls engineer's first hour with a GigE Vision camera (docs/cameras.md): what is on the
network, one image from it, and its GenICam features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import cv2
import typer

from lineguard.cameras import aravis

camera_app = typer.Typer(no_args_is_help=True, help="GigE Vision cameras: list, grab one image, show features.")

CameraArg = Annotated[
    str, typer.Argument(help="serial number, IP address, or serial=X / user_id=X / address=X", show_default=False)
]


def _open(camera: str) -> Any:
    try:
        return aravis.open_camera(aravis.Selector.parse(camera))
    except aravis.AravisUnavailable as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except (aravis.CameraNotFound, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@camera_app.command("list")
def list_cameras(
    user_ids: Annotated[
        bool, typer.Option(help="open each camera to read its user id (DeviceUserID); discovery does not carry it")
    ] = True,
) -> None:
    """The GigE Vision cameras that answer discovery on this machine's interfaces."""
    try:
        devices = aravis.discover()
        if user_ids:
            devices = aravis.with_user_ids(devices)
    except aravis.AravisUnavailable as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not devices:
        typer.echo("no GigE Vision camera answered discovery (same subnet as one of this machine's interfaces?)")
        return
    rows = [("serial", "user id", "address", "MAC", "vendor", "model", "id")]
    rows += [(d.serial, d.user_id or "-", d.address, d.mac, d.vendor, d.model, d.device_id) for d in devices]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


@camera_app.command()
def grab(
    camera: Annotated[str, typer.Option("--camera", help="serial, IP address, or serial= / user_id= / address=")],
    out: Annotated[Path, typer.Option("--out", help="the image file to write (.png, .bmp, .jpg, .tif)")],
    timeout_ms: Annotated[float, typer.Option(help="how long to wait for the frame")] = 3000,
) -> None:
    """One frame in free run, written to --out (the camera is left in free run, single-frame acquisition)."""
    cam = _open(camera)
    error = aravis.glib_error()
    pixel_format = cam.get_pixel_format_as_string()
    if pixel_format not in aravis.PIXEL_FORMATS:
        typer.echo(f"the camera is in pixel format {pixel_format}, which capture does not decode", err=True)
        raise typer.Exit(1)
    try:
        cam.clear_triggers()
        buffer = cam.acquisition(int(timeout_ms * 1000))
    except error as exc:
        typer.echo(f"grab failed: {exc.message} (does another program control the camera?)", err=True)
        raise typer.Exit(1) from None
    if buffer is None or buffer.get_status() != aravis.aravis().BufferStatus.SUCCESS:
        status = "none" if buffer is None else buffer.get_status().value_nick
        typer.echo(f"no complete frame within {timeout_ms:g} ms (buffer status {status})", err=True)
        raise typer.Exit(1)
    try:
        image = aravis.buffer_image(buffer, pixel_format)
    except aravis.GrabError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if not cv2.imwrite(str(out), image):
        typer.echo(f"could not write {out} (is the suffix an image format?)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{out}: {image.shape[1]}x{image.shape[0]} {pixel_format} from {cam.get_device_serial_number()}")


@camera_app.command()
def features(camera: CameraArg) -> None:
    """Every GenICam feature the camera has, with its type, value now and access (RO / RW / WO)."""
    cam = _open(camera)
    typer.echo(f"{'feature':<32} {'type':<14} {'value':<24} access  description")
    category = None
    for feature in aravis.features(cam):
        if feature.category != category:
            category = feature.category
            typer.echo(f"[{category}]")
        value = feature.value or "-"
        described = feature.description
        if feature.choices:
            described = f"{described} (one of: {', '.join(feature.choices)})".strip()
        typer.echo(f"{feature.name:<32} {feature.type:<14} {value:<24} {feature.access:<7} {described}".rstrip())
