"""The Grafana dashboard the deployment ships (deploy/grafana/lineguard.json) is one Grafana imports: valid JSON,
every panel on the Prometheus data source chosen at import, unique ids, laid out in Grafana's 24 columns, every
query about lineguard's metrics. That each metric it names is exported by a service is checked against the running
line's /metrics (tests/e2e/test_observability.py)."""

from __future__ import annotations

from pathlib import Path

from lineguard.testing.grafana import load_dashboard, named_metrics, panels, queries

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "lineguard.json"


def test_the_dashboard_imports_on_any_prometheus_data_source() -> None:
    dashboard = load_dashboard(DASHBOARD)
    assert dashboard["uid"] and dashboard["title"] == "lineguard"
    [datasource] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    dashboard = load_dashboard(DASHBOARD)
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_is_about_a_lineguard_metric() -> None:
    dashboard = load_dashboard(DASHBOARD)
    for expr in queries(dashboard):
        assert named_metrics({"panels": [{"targets": [{"expr": expr}]}]}), expr
    assert "lineguard_handle_seconds_bucket" in named_metrics(dashboard)


def test_the_image_quality_row_shows_each_figure_per_station() -> None:
    dashboard = load_dashboard(DASHBOARD)
    by_title = {panel["title"]: panel for panel in panels(dashboard)}
    assert by_title["Image quality"]["type"] == "row"
    for title, metric in (
        ("Image brightness", "lineguard_image_brightness"),
        ("Image contrast", "lineguard_image_contrast"),
        ("Image sharpness", "lineguard_image_sharpness"),
        ("Saturated pixels", "lineguard_image_saturated_ratio"),
    ):
        panel = by_title[title]
        assert panel["type"] == "timeseries" and panel["gridPos"]["y"] > by_title["Image quality"]["gridPos"]["y"]
        exprs = [target["expr"] for target in panel["targets"]]
        assert [e.split(",")[0] for e in exprs] == [f"histogram_quantile({q}" for q in ("0.5", "0.1", "0.9")], title
        assert all(f"sum by (station, le) (rate({metric}_bucket[" in e for e in exprs), title
