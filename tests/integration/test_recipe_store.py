"""The recipe store on a real nats-server: versions, refusals, activations and their history, the CLI, the secured
server's permissions, and a change of version taking effect between parts (gateway and decision service)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner

from lineguard.bus.client import connect_options
from lineguard.cli import app
from lineguard.config import LineConfig, RecipeSettings
from lineguard.contracts import RECIPES_BUCKET, msg_id, now_ns, stream_name, subject
from lineguard.natsserver import EmbeddedNats
from lineguard.recipes import LiveRecipes, RecipeError, RecipeStore, RecipeVersion
from lineguard.registry import connect_registry
from lineguard.services.decision.service import setup as decision_setup
from lineguard.services.gateway.handshake import Handshake
from lineguard.services.gateway.recipes import RecipeBook, UnknownRecipe
from lineguard.testing import running_service
from lineguard.testing.models import model_version
from lineguard.testing.records import triggered_part
from lineguard.testing.streams import collect
from lineguard.testing.waiting import wait_for
from lineguard.v1.decision_pb2 import Decision, Verdict
from lineguard.v1.inference_pb2 import Detection, InferenceResult
from lineguard.v1.ocr_pb2 import Code, OcrResult
from lineguard.v1.trigger_pb2 import Trigger


def version(recipe_id: str = "pcb-a", v: str = "2", **settings: object) -> RecipeVersion:
    return RecipeVersion.of(recipe_id, RecipeSettings(version=v, **settings))


async def test_versions_are_immutable_and_model_references_are_checked(
    fresh_nats: EmbeddedNats, tmp_path: Path
) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        store = await RecipeStore.open(registry.js)
        stored, new = await store.push(version(min_score=0.7), registry=registry, by="qe@plant")
        assert new and stored.pushed_by == "qe@plant" and stored.pushed_at
        again, new = await store.push(version(min_score=0.7), registry=registry)
        assert not new and again.sha256 == stored.sha256 and again.pushed_by == "qe@plant"
        with pytest.raises(RecipeError, match="already stored with other settings") as caught:
            await store.push(version(min_score=0.8), registry=registry)
        assert caught.value.reason == "RECIPE_VERSION_EXISTS"
        assert (await store.get("pcb-a", "2")).settings.min_score == 0.7

        model = await registry.push(model_version(tmp_path, "1.0.0"))
        ref = {"id": model.model_id, "version": "1.0.0", "sha256": model.sha256}
        classes = {c: {"verdict": "fail"} for c in model.classes[:2]}
        ok, _ = await store.push(version(v="3", model=ref, classes=classes), registry=registry)
        assert ok.settings.model is not None and ok.settings.model.sha256 == model.sha256
        refusals = {
            "MODEL_UNKNOWN": [
                version(v="4", model={**ref, "version": "9.9"}),
                version(v="5", model={**ref, "id": "nosuch"}),
                version(v="6", model={**ref, "sha256": "0" * 64}),
            ],
            "RECIPE_CLASSES_UNKNOWN": [
                version(v="7", model=ref, classes={"scratch": {"verdict": "fail"}}),
                # A zone's rule for a class the model does not have (lineguard.config.rules.model_problems).
                version(
                    v="8",
                    model=ref,
                    image_size={"width": 640, "height": 640},
                    zones={"pads": {"kind": "critical", "polygon": [[0, 0], [9, 0], [9, 9]], "classes": {"dirt": {}}}},
                ),
            ],
        }
        for reason, candidates in refusals.items():
            for candidate in candidates:
                with pytest.raises(RecipeError) as caught:
                    await store.push(candidate, registry=registry)
                assert caught.value.reason == reason, caught.value
        assert [v.version for v in await store.versions()] == ["2", "3"]  # nothing refused was stored
        with pytest.raises(RecipeError, match=r"has no version '4' \(stored: 2, 3\)"):
            await store.get("pcb-a", "4")


async def test_activations_have_a_history_and_are_watched(fresh_nats: EmbeddedNats) -> None:
    async with connect_registry(fresh_nats.url) as registry:
        store = await RecipeStore.open(registry.js)
        for candidate in (version(v="1"), version(v="2", min_score=0.9), version("quick", "1", deadline_ms=300)):
            await store.push(candidate, registry=registry)
        watched: list[str] = []

        async def watch() -> None:
            async for activation in store.watch("l1"):
                watched.append(f"{activation.station}:{activation.ref}")

        watcher = asyncio.create_task(watch())
        first = await store.activate("l1", "s1", "pcb-a", "1", by="a")
        await store.activate("l1", "s1", "quick", "1", by="b")
        last = await store.activate("l1", "s1", "pcb-a", "2", by="c")
        await wait_for(lambda: len(watched) == 3, timeout=5)
        watcher.cancel()
        assert watched == ["s1:pcb-a@1", "s1:quick@1", "s1:pcb-a@2"]
        assert last.versions == {"pcb-a": "2", "quick": "1"} and last.revision > first.revision
        assert [(a.ref, a.by) for a in await store.history("l1", "s1")] == [
            ("pcb-a@1", "a"),
            ("quick@1", "b"),
            ("pcb-a@2", "c"),
        ]
        assert set(await store.stations("l1")) == {"s1"} and await store.active("l1", "s2") is None
        with pytest.raises(RecipeError, match="no recipe 'nosuch'"):
            await store.activate("l1", "s1", "nosuch", "1")
        assert (await store.active("l1", "s1")).ref == "pcb-a@2"  # type: ignore[union-attr]


async def test_a_part_keeps_the_version_it_was_triggered_with(fresh_nats: EmbeddedNats, line_config_dict) -> None:
    """The gateway side: an activation reaches the station's handshake while a part is in flight; that part keeps
    v1, the next is stamped v2; a PLC's product change picks the version activated for that recipe."""
    raw = line_config_dict(nats_url=fresh_nats.url)
    raw["recipes"]["pcb-a"]["plc_recipe_number"] = 1
    raw["recipes"]["quick"] = {"version": "1", "deadline_ms": 300, "plc_recipe_number": 2}
    config = LineConfig(**raw)
    async with connect_registry(fresh_nats.url) as registry:
        store = await RecipeStore.open(registry.js)
        v2 = RecipeVersion.of(
            "pcb-a", RecipeSettings(**{**raw["recipes"]["pcb-a"], "version": "2", "deadline_ms": 5000})
        )
        await store.push(v2, registry=registry)
        live = LiveRecipes(config, store)
        await live.start()
        handshake = Handshake(line="l1", station="s1", recipe_id="pcb-a", timeout_s=3)
        book = RecipeBook(config, {"s1": handshake}, live)
        applied: list[str] = []

        def activated(station: str, taken: RecipeVersion) -> None:
            applied.append(taken.ref)
            book.activated(station, taken)

        stopping = asyncio.Event()
        follower = asyncio.create_task(live.follow(stopping, activated))
        try:
            in_flight = handshake.trigger(1).part
            assert (in_flight.recipe_version, in_flight.recipe_sha256) == (
                "1",
                RecipeVersion.of("pcb-a", config.recipes["pcb-a"]).sha256,
            )
            await store.activate("l1", "s1", "pcb-a", "2")
            await wait_for(lambda: handshake.recipe_version == "2", timeout=5)
            after = handshake.trigger(2).part
            assert (after.recipe_version, after.recipe_sha256, handshake.timeout_s) == ("2", v2.sha256, 5.5)
            # The version's deadline travels with the part: inference and OCR admit its frame by it.
            assert (in_flight.deadline_ms, after.deadline_ms) == (3000, 5000)
            assert in_flight.recipe_version == "1"  # already triggered: judged by v1
            assert book.select_number("s1", 2).id == "quick" and handshake.recipe_version == "1"
            assert book.select_number("s1", 1).version == "2"  # back to pcb-a: the version activated here
            with pytest.raises(UnknownRecipe, match="PLC recipe number 9 is not defined"):
                book.select_number("s1", 9)
            assert (handshake.recipe_id, handshake.recipe_version) == ("pcb-a", "2")  # the live recipe stays
            # An activation the gateway cannot take in (the version was never pushed, written by hand): skipped.
            bogus = b'{"line": "l1", "station": "s1", "recipe_id": "pcb-a", "version": "7", "sha256": "x", '
            bogus += b'"versions": {}, "by": "?", "at": "?"}'
            await store.kv.put("active.l1.s1", bogus)
            await store.push(RecipeVersion.of("quick", config.recipes["quick"]), registry=registry)
            await store.activate("l1", "s1", "quick", "1")
            await wait_for(lambda: handshake.recipe_id == "quick", timeout=5)
            assert applied == ["pcb-a@2", "quick@1"]  # the bogus record in between was never applied
        finally:
            stopping.set()
            await follower


async def send(bus, kind: str, message) -> None:
    await bus.publish(subject(kind, "l1", "s1"), message, msg_id=msg_id(message.part.inspection_id, kind))


async def test_the_decision_judges_each_part_by_its_own_version(bus_factory, fresh_nats, line_config_dict) -> None:
    """v2 raises min_score to 0.95: a part triggered under v1 with a 0.9 short still fails after v2 is activated,
    the part triggered under v2 passes; each decision names its version and sha256."""
    bus = await bus_factory("driver")
    config = LineConfig(**line_config_dict(nats_url=fresh_nats.url, deadline_ms=3000))
    v1 = RecipeVersion.of("pcb-a", config.recipes["pcb-a"])
    v2 = RecipeVersion.of("pcb-a", config.recipes["pcb-a"].model_copy(update={"version": "2", "min_score": 0.95}))
    async with running_service("decision", config, decision_setup), connect_registry(fresh_nats.url) as registry:
        store = await RecipeStore.open(registry.js)
        await store.push(v2, registry=registry)
        old, new, unknown = triggered_part(1), triggered_part(2), triggered_part(3)
        old.recipe_version, old.recipe_sha256 = v1.version, v1.sha256
        new.recipe_version, new.recipe_sha256 = v2.version, v2.sha256
        unknown.recipe_version = "9"
        await send(bus, "trigger", Trigger(part=old))
        await store.activate("l1", "s1", "pcb-a", "2")
        for part in (new, unknown):
            await send(bus, "trigger", Trigger(part=part))
        for part in (old, new):
            ocr = OcrResult(part=part, codes=[Code(text=f"LG-0000000{part.sequence}")], completed_unix_ns=now_ns())
            await send(bus, "ocr", ocr)
            dets = [Detection(class_name="short", score=0.9)]
            await send(bus, "inference", InferenceResult(part=part, detections=dets, completed_unix_ns=now_ns()))
        got = {
            d.part.inspection_id: d
            for d in (
                Decision.FromString(m.data)
                for m in await collect(bus, "lg.decision.l1.*", stream_name("decision"), 3, 10)
            )
        }
    judged_old, judged_new, refused = got[old.inspection_id], got[new.inspection_id], got[unknown.inspection_id]
    assert (judged_old.verdict, judged_old.recipe_version, judged_old.part.recipe_sha256) == (
        Verdict.VERDICT_FAIL,
        "1",
        v1.sha256,
    )
    assert (judged_new.verdict, judged_new.recipe_version, judged_new.part.recipe_sha256) == (
        Verdict.VERDICT_PASS,
        "2",
        v2.sha256,
    )
    assert refused.verdict == Verdict.VERDICT_ERROR and "UNKNOWN_RECIPE" in refused.reason_codes


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


async def test_the_cli_pushes_lists_shows_diffs_activates(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    url = fresh_nats.url
    v1, v2, bad = tmp_path / "v1.yaml", tmp_path / "v2.yaml", tmp_path / "bad.yaml"
    v1.write_text('id: pcb-a\nversion: "1"\nmin_score: 0.5\nplc_recipe_number: 4\n')
    v2.write_text('id: pcb-a\nversion: "2"\nmin_score: 0.7\nplc_recipe_number: 4\n')
    bad.write_text('id: pcb-a\nversion: "3"\nmin_score: 7\n')

    def run(*args: str) -> tuple[int, str]:
        return cli(*args, "--nats", url)

    # CliRunner runs the command's own event loop: off this test's loop.
    code, out = await asyncio.to_thread(run, "recipe", "push", str(bad))
    assert code == 2 and f"{bad}:3: min_score: " in out
    for f in (v1, v2):
        code, out = await asyncio.to_thread(run, "recipe", "push", str(f))
        assert code == 0 and "stored (sha256" in out, out
    code, out = await asyncio.to_thread(run, "recipe", "push", str(v2))
    assert code == 0 and "already stored, unchanged" in out
    code, out = await asyncio.to_thread(run, "recipe", "activate", "--station", "s1", "pcb-a@2")
    assert code == 0 and "l1/s1: pcb-a@2 active" in out, out
    # A version whose zones lie outside their image is refused before anything is stored; s1 keeps pcb-a@2.
    zoned = tmp_path / "zoned.yaml"
    zoned.write_text(
        'id: pcb-a\nversion: "6"\nimage_size: {width: 640, height: 640}\nzones:\n'
        "  pads: {kind: critical, polygon: [[0, 0], [700, 0], [700, 100]]}\n"
    )
    code, out = await asyncio.to_thread(run, "recipe", "push", str(zoned))
    assert code == 2 and f"{zoned}:4: zones: " in out and "ZONE_OUTSIDE_IMAGE: zone 'pads'" in out, out
    code, out = await asyncio.to_thread(run, "recipe", "activate", "--station", "s1", "pcb-a@5")
    assert code == 1 and "[UNKNOWN_RECIPE]" in out and "stored: 1, 2" in out
    code, out = await asyncio.to_thread(run, "recipe", "list")
    assert code == 0 and "pcb-a" in out and "s1" in out, out
    code, out = await asyncio.to_thread(run, "recipe", "show", "pcb-a@2")
    assert code == 0 and '"min_score": 0.7' in out
    code, out = await asyncio.to_thread(run, "recipe", "diff", "pcb-a@1", "pcb-a@2", "--json")
    assert code == 0 and '"field": "min_score"' in out and "0.7" in out
    code, out = await asyncio.to_thread(run, "recipe", "history", "--station", "s1", "--json")
    assert code == 0 and '"recipe": "pcb-a@2"' in out
    assert '"pcb-a@6"' not in out


TRIAL_V1 = """\
id: pcb-a
version: "1"
min_score: 0.5
classes:
  short: {verdict: fail}
  spur: {verdict: rework}
  mousebite: {verdict: rework}
  copper: {verdict: rework}
  pin-hole: {verdict: rework}
"""
TRIAL_V2 = """\
id: pcb-a
version: "2"
min_score: 0.5
classes:
  short: {verdict: fail}
  spur: {verdict: rework, min_score: 0.7}
"""


async def test_the_diff_says_what_each_class_gets_not_only_which_fields_changed(
    fresh_nats: EmbeddedNats, tmp_path: Path
) -> None:
    """The user trial: version 2 lists only short and spur, so mousebite, copper and pin-hole go from rework to
    fail at min_score; the raw diff read as their verdict removed (`"rework" -> null`)."""
    for text in (TRIAL_V1, TRIAL_V2):
        (tmp_path / "v.yaml").write_text(text)
        code, out = await asyncio.to_thread(cli, "recipe", "push", str(tmp_path / "v.yaml"), "--nats", fresh_nats.url)
        assert code == 0, out
    code, out = await asyncio.to_thread(cli, "recipe", "diff", "pcb-a@1", "pcb-a@2", "--nats", fresh_nats.url)
    assert code == 0, out
    # The rows of the first table (four columns: 5 bars; the settings table after it has three), by class.
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.count("│") == 5
    }
    for name in ("mousebite", "copper", "pin-hole"):
        assert rows[name] == ["", "rework at min_score 0.5", "fail at min_score 0.5 (not listed)"], out
    assert rows["spur"] == ["", "rework at min_score 0.5", "rework at min_score 0.7"]
    assert "short" not in rows and "open" not in rows  # the same rule in both: fail at 0.5 (open not listed in either)
    assert "classes.mousebite.verdict" in out  # the raw field changes still follow
    code, out = await asyncio.to_thread(cli, "recipe", "diff", "pcb-a@1", "pcb-a@2", "--json", "--nats", fresh_nats.url)
    assert code == 0, out
    report = json.loads(out)
    [mousebite] = [r for r in report["rules"] if r["class"] == "mousebite"]
    assert mousebite["zone"] is None
    assert (mousebite["pcb-a@1"]["verdict"], mousebite["pcb-a@1"]["listed"]) == ("rework", True)
    assert (mousebite["pcb-a@2"]["verdict"], mousebite["pcb-a@2"]["min_score"]) == ("fail", 0.5)
    assert mousebite["pcb-a@2"]["listed"] is False
    assert {"field": "classes.mousebite.verdict", "pcb-a@1": "rework", "pcb-a@2": None} in report["fields"]


async def test_secured_bucket_services_read_and_only_the_operator_writes(secured_nats: EmbeddedNats) -> None:
    settings = secured_nats.settings()
    async with connect_registry(settings) as registry:  # the operator
        store = await RecipeStore.open(registry.js, provision=False)
        await store.push(version(v="1"), registry=registry)
        await store.activate("l1", "s1", "pcb-a", "1")
    for identity, may_read in (("decision", True), ("gateway", True), ("inference", False), ("results", False)):
        errors: list[str] = []

        async def note(exc: Exception, errors: list[str] = errors) -> None:
            errors.append(str(exc))

        nc = await nats.connect(**{**connect_options(settings, identity), "error_cb": note}, allow_reconnect=False)
        try:
            js = nc.jetstream(timeout=2)
            if may_read:
                reader = await RecipeStore.open(js, provision=False)
                assert (await reader.get("pcb-a", "1")).sha256 == version(v="1").sha256
                assert (await reader.active("l1", "s1")).ref == "pcb-a@1"  # type: ignore[union-attr]
                with pytest.raises(Exception):  # noqa: B017 - a refused publish is only ever timed out
                    await reader.kv.put("active.l1.s1", b"{}")
            else:
                with pytest.raises(Exception):  # noqa: B017
                    await js.key_value(RECIPES_BUCKET)
            await nc.flush()
            assert any("permissions violation" in e.lower() for e in errors), (identity, errors)
        finally:
            await nc.close()
