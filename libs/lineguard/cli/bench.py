"""`lineguard bench`: what this box sustains, for sizing hardware (edge or cloud, which Jetson).

The bare model on each backend this install can run (batch 1 and N), then the whole line (lineguard demo's: six
processes, secured nats-server, SQLite, the shipped model, a simulated OPC UA PLC) at rates found by bisection:
the highest rate at which every part is judged, against the bare model on the line's own backend in the same run.
Printed as a table, and as one JSON object with --json."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lineguard.bench.line import connected_plc, drive, find_sustainable, settle, start_line
from lineguard.bench.model import Runtime, bare_run
from lineguard.vision.model import packaged_model_path

# Backends to try on the bare model, each with the device it runs on and the module its runtime needs.
CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("onnxruntime", "cpu", "onnxruntime"),
    ("openvino", "CPU", "openvino"),
    ("tensorrt", "cuda", "tensorrt"),
)


def bench(
    seconds: Annotated[float, typer.Option(min=2.0, help="how long each of the line's runs triggers parts")] = 8.0,
    steps: Annotated[int, typer.Option(min=1, max=10, help="runs of the search for the line's sustained rate")] = 4,
    batch: Annotated[int, typer.Option(min=2, help="the bare model's second batch size")] = 4,
    images: Annotated[int, typer.Option(min=8, help="images per bare run")] = 40,
    threads: Annotated[int, typer.Option(min=0, help="the model's CPU threads (0: half the cores, at least 1)")] = 0,
    line: Annotated[bool, typer.Option(help="also run the whole line (--no-line: the bare model only)")] = True,
    workdir: Annotated[Path | None, typer.Option(help="where the line runs (default: a new folder)")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the figures as one JSON object on the last line")
    ] = False,
) -> None:
    """Measure the bare model per backend and the line's sustained rate on this box; print the ratio."""
    err = Console(stderr=True)
    model = packaged_model_path()
    err.print(f"[bold]lineguard bench[/]: model {model.name}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    bare = bare_table(model, threads, images, batch, err)
    figures: dict[str, Any] = {"model": model.name, "cpus": os.cpu_count(), "bare": bare}
    if line:
        baseline = next(b for b in bare if b["backend"] == "onnxruntime" and b["batch"] == 1)
        folder = workdir or Path(tempfile.mkdtemp(prefix="lineguard-bench-")) / "line"
        err.print(
            f"the line (lineguard demo's) in {folder}: searching its sustained rate, {steps} runs of {seconds:g} s"
        )
        figures["line"] = asyncio.run(line_figures(folder, model, threads, images, seconds, steps, err))
        figures["line"]["bare_during"] = baseline["images_per_s"]
    figures["load_1m_after"] = round(os.getloadavg()[0], 2)
    print_figures(Console(), figures)
    if as_json:
        print(json.dumps(figures), flush=True)


def bare_table(model: Path, threads: int, images: int, batch: int, err: Console) -> list[dict[str, Any]]:
    rows = []
    for backend, device, module in CANDIDATES:
        if importlib.util.find_spec(module) is None:
            rows.append({"backend": backend, "device": device, "batch": 1, "unavailable": f"{module} not installed"})
            continue
        for size in (1, batch):
            try:
                run = bare_run(model, Runtime(backend, device, threads), images, size)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a row saying why
                rows.append({"backend": backend, "device": device, "batch": size, "unavailable": str(exc)[:200]})
                break
            rows.append(
                {
                    "backend": backend,
                    "device": device,
                    "batch": size,
                    "images_per_s": round(run.images_per_s, 2),
                    "p50_ms": round(run.p50_ms, 1),
                    "cpu_ms_per_image": round(run.cpu_ms_per_image, 1),
                }
            )
            err.print(f"  bare {backend} ({device}) batch {size}: {run.images_per_s:.1f} img/s", highlight=False)
    return rows


async def line_figures(
    folder: Path, model: Path, threads: int, images: int, seconds: float, steps: int, err: Console
) -> dict[str, Any]:
    running = await asyncio.to_thread(start_line, folder, {"model": {"intra_op_threads": threads}})
    try:
        plc = await connected_plc(running)
        try:
            await drive(running, plc, 2.0, 10)  # warm up: what each service loads lazily
            await settle()
            # The bare model in the same window as the line, right before the search: the ratio's baseline.
            before = await asyncio.to_thread(bare_run, model, Runtime(threads=threads), images)
            rate, runs = await find_sustainable(
                running, plc, before.images_per_s, seconds, steps, lambda text: err.print(text, highlight=False)
            )
            overload = None
            if rate > 0:
                overload = await drive(running, plc, 2 * rate, max(10, round(2 * rate * seconds)))
        finally:
            await plc.__aexit__(None, None, None)
    finally:
        await asyncio.to_thread(running.stop)
    sustained = next((r for r in reversed(runs) if r.sustained and r.rate == round(rate, 2)), None)
    return {
        "bare_images_per_s": round(before.images_per_s, 2),
        "sustained_parts_per_s": round(rate, 2),
        "ratio": round(rate / before.images_per_s, 3) if before.images_per_s else 0.0,
        "cpu_ms_per_part": sustained.cpu_ms_per_part if sustained else {},
        "cpu_ms_per_part_outside_model": round(sustained.cpu_ms_total - before.cpu_ms_per_image, 1)
        if sustained
        else None,
        "overload": overload.as_dict() if overload else None,
        "runs": [r.as_dict() for r in runs],
    }


def print_figures(console: Console, figures: dict[str, Any]) -> None:
    table = Table(title="the bare model (no decode, no NMS, no bus)")
    for column in ("backend", "device", "batch", "images/s", "p50 ms / batch", "CPU ms / image"):
        table.add_column(column)
    for row in figures["bare"]:
        if "unavailable" in row:
            table.add_row(row["backend"], row["device"], str(row["batch"]), f"unavailable: {row['unavailable']}")
            continue
        table.add_row(
            row["backend"],
            row["device"],
            str(row["batch"]),
            f"{row['images_per_s']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['cpu_ms_per_image']:.1f}",
        )
    console.print(table)
    line = figures.get("line")
    if not line:
        return
    summary = Table(title="the whole line (lineguard demo's, onnxruntime on the CPU)", show_header=False)
    summary.add_row("bare model, same window", f"{line['bare_images_per_s']:.1f} img/s")
    summary.add_row("sustained, every part judged", f"{line['sustained_parts_per_s']:.1f} parts/s")
    summary.add_row("ratio line / bare model", f"{line['ratio']:.2f}")
    if line["cpu_ms_per_part_outside_model"] is not None:
        per = ", ".join(f"{k} {v:g}" for k, v in line["cpu_ms_per_part"].items())
        summary.add_row("CPU ms per part outside the model", f"{line['cpu_ms_per_part_outside_model']:.1f} ({per})")
    overload = line.get("overload")
    if overload:
        summary.add_row(
            f"at 2x ({overload['rate']:.1f} parts/s)",
            f"{overload['judged_per_s']:.1f} judged/s, {overload['overload']} OVERLOAD (p50 "
            f"{overload['overload_p50_ms']} ms), {overload['timeout']} TIMEOUT",
        )
    console.print(summary)
