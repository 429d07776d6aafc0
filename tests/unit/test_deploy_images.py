"""The image recipes: hadolint-clean (the GPU variants too, which cannot be built here), and each final stage a
non-root user's, with a health check and no build tools; the bake file names every image the chart runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
RECIPES = sorted(IMAGES.glob("Containerfile*"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_hadolint_passes(recipe: Path) -> None:
    done = subprocess.run(
        ["hadolint", "--config", str(IMAGES / "hadolint.yaml"), str(recipe)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_the_final_stage_runs_unprivileged_with_a_health_check_and_no_build_tools(recipe: Path) -> None:
    final = re.split(r"^FROM ", recipe.read_text(), flags=re.M)[-1]
    assert final.startswith("os AS service")  # on the bare OS stage, not the build stage
    assert "USER 10001:10001" in final and "--create-home" in final
    assert "HEALTHCHECK" in final and "/healthz" in final
    for tool in ("build-essential", "gcc", "python3-venv", "python3.11-venv", "-dev"):
        assert tool not in final, tool


def test_bake_builds_each_image_for_amd64_and_arm64() -> None:
    bake = (IMAGES / "docker-bake.hcl").read_text()
    assert '"linux/amd64", "linux/arm64"' in bake
    for name in ("capture", "inference", "ocr", "decision", "gateway", "results"):
        assert f'"{name}"' in bake
    for variant in ("inference-cuda", "inference-jetson", "tools"):
        assert f'target "{variant}"' in bake


def test_every_service_image_can_turn_tracing_on() -> None:
    """The tracing extra (the OpenTelemetry SDK and exporter) in each service's image; the CPU images' is shown by
    tests/deploy (spans from every container), the GPU variants', which cannot be built here, by their recipes."""
    assert 'wanted=("$target" tracing)' in (ROOT / "scripts" / "build-images").read_text()
    assert 'EXTRAS = "${service},tracing"' in (IMAGES / "docker-bake.hcl").read_text()
    wheels = re.search(r"ARG WHEEL_EXTRAS=\"([^\"]*)\"", (IMAGES / "Containerfile").read_text())
    assert wheels and "tracing" in wheels[1].split()
    for variant in ("Containerfile.cuda", "Containerfile.jetson"):
        install = re.search(r'pip install [^"]*"\.\[([^\]]*)\]"', (IMAGES / variant).read_text())
        assert install and "tracing" in install[1].split(","), variant
