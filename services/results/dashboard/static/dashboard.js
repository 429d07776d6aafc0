// The dashboard's only script of its own: draws the charts from the JSON the server put in the page
// (#chart-data), and again whenever htmx swaps a new #charts fragment in. No inline script anywhere.
(function () {
  "use strict";
  var charts = {};
  var css = getComputedStyle(document.documentElement);
  function colour(name, fallback) { return (css.getPropertyValue(name) || fallback).trim(); }

  function draw() {
    var holder = document.getElementById("chart-data");
    if (!holder || typeof Chart === "undefined") { return; }
    var data = JSON.parse(holder.textContent);
    var pass = colour("--pass", "#2e9d4f"), fail = colour("--fail", "#d33");
    Object.keys(charts).forEach(function (k) { charts[k].destroy(); delete charts[k]; });
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var kind = canvas.dataset.chart, d = data[kind];
      var config;
      if (kind === "pareto") {
        config = {
          type: "bar",
          data: { labels: d.labels, datasets: [{ label: "parts", data: d.parts, backgroundColor: fail }] },
          options: { indexAxis: "y", animation: false, maintainAspectRatio: false, plugins: { legend: { display: false } } }
        };
      } else {
        config = {
          data: {
            labels: d.labels,
            datasets: [
              { type: "line", label: "yield %", data: d.yield, borderColor: pass, backgroundColor: pass, yAxisID: "y" },
              { type: "bar", label: "parts", data: d.parts, backgroundColor: "rgba(120,130,150,0.35)", yAxisID: "parts" }
            ]
          },
          options: {
            animation: false, maintainAspectRatio: false,
            scales: { y: { min: 0, max: 100, title: { display: true, text: "yield %" } },
                      parts: { position: "right", grid: { drawOnChartArea: false }, beginAtZero: true } }
          }
        };
      }
      charts[kind] = new Chart(canvas, config);
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "charts") { draw(); }
  });
})();
