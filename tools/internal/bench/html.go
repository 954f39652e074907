package bench

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
)

// htmlCell is a table cell: a figure, and the range of the repetitions
// shown small beneath it.
type htmlCell struct {
	Text, Range string
	Num         bool
}

type htmlRow []htmlCell

func textRow(vals ...string) htmlRow {
	r := make(htmlRow, len(vals))
	for i, v := range vals {
		r[i] = htmlCell{Text: v}
	}
	return r
}

func spreadHTML(s Spread, f func(float64) string) htmlCell {
	c := htmlCell{Text: f(s.Median), Num: true}
	if s.Min != s.Max {
		c.Range = f(s.Min) + "–" + f(s.Max)
	}
	return c
}

func latHTML(l *Latency, pick func(*Latency) Spread) htmlCell {
	if l == nil || l.Merged.Count == 0 {
		return htmlCell{Text: "–", Num: true}
	}
	return spreadHTML(pick(l), fmtMs)
}

type htmlPage struct {
	Title, Machine, Note, Command, Version, Ran string
	Reps                                        int
	Brokers                                     []htmlRow
	DurabilityDiffers                           bool
	MaxRows, FixedRows                          []htmlRow
	Notes                                       []string
	Data                                        template.JS
	Script                                      template.JS
}

// WriteHTML writes a self-contained page: the report's tables, a bar chart
// of maximum throughput and percentile curves of latency, drawn as SVG by
// the page's own script from the results embedded in it. It loads
// nothing from elsewhere.
//
// After drawing, the element #status has data-rendered="ok" and
// data-charts set to the number of charts; script errors are listed in
// #errors and counted in the root element's data-errors. Tests read
// these.
func WriteHTML(w io.Writer, r *Report) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	p := htmlPage{
		Title:             "omnibus bench, " + r.Started.Format("2006-01-02 15:04 MST"),
		Machine:           machineLine(r.Machine),
		Note:              r.Note,
		Command:           r.Command,
		Version:           r.Version,
		Ran:               r.Finished.Sub(r.Started).Round(1e9).String(),
		Reps:              repsOf(r),
		DurabilityDiffers: durabilityDiffers(r),
		// json.Marshal escapes <, > and &, so the data cannot end its
		// script element.
		Data:   template.JS(data),
		Script: template.JS(reportScript),
	}
	for _, b := range r.Brokers {
		p.Brokers = append(p.Brokers, textRow(b.Target, b.Product, b.Version, b.VersionSource, clientLine(b.Client), b.Durability.Summary))
	}
	for _, res := range r.Results {
		switch {
		case res.Kind == KindMax && res.Error != "" && len(res.Samples) == 0:
			p.MaxRows = append(p.MaxRows, textRow(res.Target, res.Workload.Name, "failed: "+res.Error, "", "", "", "", "", ""))
		case res.Kind == KindMax:
			p.MaxRows = append(p.MaxRows, append(textRow(res.Target, res.Workload.Name),
				spreadHTML(res.PublishRate, count), spreadHTML(res.ConsumeRate, count),
				spreadHTML(res.ConsumeMBps, func(v float64) string { return fmt.Sprintf("%.1f", v) }),
				latHTML(res.PublishLatency, func(l *Latency) Spread { return l.P50 }),
				latHTML(res.PublishLatency, func(l *Latency) Spread { return l.P99 }),
				latHTML(res.EndToEnd, func(l *Latency) Spread { return l.P50 }),
				latHTML(res.EndToEnd, func(l *Latency) Spread { return l.P99 })))
		default:
			target := count(res.Workload.Rate)
			if res.Fraction > 0 {
				target += fmt.Sprintf(" (%.0f%%)", 100*res.Fraction)
			}
			if res.Error != "" && len(res.Samples) == 0 {
				p.FixedRows = append(p.FixedRows, textRow(res.Target, res.Workload.Name, target, "failed: "+res.Error, "", "", "", "", "", "", "", ""))
				continue
			}
			p.FixedRows = append(p.FixedRows, append(textRow(res.Target, res.Workload.Name, target),
				spreadHTML(res.ConsumeRate, count),
				latHTML(res.EndToEnd, func(l *Latency) Spread { return l.P50 }),
				latHTML(res.EndToEnd, func(l *Latency) Spread { return l.P90 }),
				latHTML(res.EndToEnd, func(l *Latency) Spread { return l.P99 }),
				latHTML(res.EndToEnd, func(l *Latency) Spread { return l.P999 }),
				latHTML(res.EndToEnd, func(l *Latency) Spread { return l.Max }),
				latHTML(res.PublishLatency, func(l *Latency) Spread { return l.P99 }),
				latHTML(res.SendDelay, func(l *Latency) Spread { return l.P99 }),
				latHTML(res.EndToEndFromSend, func(l *Latency) Spread { return l.P99 })))
		}
	}
	for _, b := range r.Brokers {
		for _, n := range b.Notes {
			p.Notes = append(p.Notes, b.Target+": "+n)
		}
	}
	for _, res := range r.Results {
		for _, n := range res.Notes {
			p.Notes = append(p.Notes, res.ID+": "+n)
		}
		if res.Error != "" {
			p.Notes = append(p.Notes, res.ID+": failed: "+res.Error)
		}
	}
	for _, b := range r.Brokers {
		keys := make([]string, 0, len(b.Durability.Settings))
		for k := range b.Durability.Settings {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, k+"="+b.Durability.Settings[k])
		}
		p.Notes = append(p.Notes, b.Target+" settings ("+b.URL+"): "+strings.Join(kv, ", "))
	}
	return pageTemplate.Execute(w, p)
}

var pageTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<script>
window.benchErrors = [];
window.onerror = function (msg, src, line, col) {
  window.benchErrors.push(msg + " (line " + line + ":" + col + ")");
  document.documentElement.setAttribute("data-errors", String(window.benchErrors.length));
  var e = document.getElementById("errors");
  if (e) { e.textContent = window.benchErrors.join("\n"); e.hidden = false; }
};
</script>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin: .2em 0; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td small { display: block; color: #888; font-size: 11px; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: .5em .8em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figcaption { font-size: 13px; color: #444; text-align: center; }
svg.chart text { font-size: 11px; fill: #333; }
svg.chart .grid { stroke: #e6e6e6; }
svg.chart .axis { stroke: #888; }
#errors { color: #b00; }
#status { color: #777; font-size: 12px; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="meta">Machine: {{.Machine}}</p>
{{if .Note}}<p class="meta">Note: {{.Note}}</p>{{end}}
{{if .Command}}<p class="meta">Command: <code>{{.Command}}</code></p>{{end}}
<p class="meta">omnibus {{.Version}}; ran {{.Ran}}; every figure is the median of {{.Reps}} repetitions, with [min–max] when they differ.</p>
<p id="status" data-rendered="no">Charts need JavaScript; the tables below hold the same figures.</p>
<pre id="errors" hidden></pre>

<h2>Brokers</h2>
<table>
<tr><th>target</th><th>broker</th><th>version</th><th>version read from</th><th>client</th><th>durability of an acknowledged publish</th></tr>
{{range .Brokers}}<tr>{{range .}}<td>{{.Text}}</td>{{end}}</tr>
{{end}}</table>
{{if .DurabilityDiffers}}<p class="warn"><strong>Durability differs between these brokers</strong>: an acknowledged publish means something else on each (last column). Compare their figures with that in mind.</p>{{end}}

<h2>Maximum throughput (closed loop)</h2>
<p>Messages per second consumed while producers publish as fast as each Publish returns (bars: median; whiskers: range over repetitions).</p>
<div id="throughput" class="charts"></div>
<table>
<tr><th>broker</th><th>workload</th><th>publish msg/s</th><th>consume msg/s</th><th>consume MB/s</th><th>publish p50</th><th>publish p99</th><th>end-to-end p50</th><th>end-to-end p99</th></tr>
{{range .MaxRows}}<tr>{{template "cells" .}}</tr>
{{end}}</table>

<h2>Latency percentiles (fixed rates, open loop)</h2>
<p>Latency from the time each message was due in the schedule, so stalls are not hidden (coordinated omission corrected). Axes are logarithmic; the curves merge all repetitions.</p>
<p><label>Latency: <select id="metric">
<option value="end_to_end_latency">end to end (due → received)</option>
<option value="publish_latency">publish (due → Publish returned)</option>
<option value="send_delay">send delay (due → Publish called)</option>
<option value="end_to_end_from_send">end to end from send (uncorrected)</option>
</select></label></p>
<div id="latency" class="charts"></div>
<table>
<tr><th>broker</th><th>workload</th><th>target msg/s (share of max)</th><th>achieved msg/s</th><th>e2e p50</th><th>e2e p90</th><th>e2e p99</th><th>e2e p99.9</th><th>e2e max</th><th>publish p99</th><th>send delay p99</th><th>e2e p99 from send</th></tr>
{{range .FixedRows}}<tr>{{template "cells" .}}</tr>
{{end}}</table>

{{if .Notes}}<h2>Notes</h2>
<ul>{{range .Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}

<script type="application/json" id="report-data">{{.Data}}</script>
<script>{{.Script}}</script>
</body>
</html>
{{define "cells"}}{{range .}}<td{{if .Num}} class="num"{{end}}>{{.Text}}{{if .Range}}<small>{{.Range}}</small>{{end}}</td>{{end}}{{end}}`))

// reportScript draws the charts. It is written for this page alone and
// uses only the DOM.
const reportScript = `
(function () {
  "use strict";
  var report = JSON.parse(document.getElementById("report-data").textContent);
  var results = report.results || [];
  var NS = "http://www.w3.org/2000/svg";
  var palette = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"];
  var dashes = ["", "7 3", "2 3", "10 3 2 3", "1 2"];
  var targets = [];
  results.forEach(function (r) { if (targets.indexOf(r.target) < 0) { targets.push(r.target); } });
  var charts = 0;

  function color(t) { return palette[targets.indexOf(t) % palette.length]; }

  function node(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { if (attrs.hasOwnProperty(k)) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function fmtCount(v) {
    if (v >= 1e6) { return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M"; }
    if (v >= 1e3) { return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k"; }
    return v.toFixed(0);
  }

  function fmtMs(v) {
    if (v < 1) { return +(v * 1000).toPrecision(3) + " µs"; }
    if (v < 1000) { return +v.toPrecision(3) + " ms"; }
    return +(v / 1000).toPrecision(3) + " s";
  }

  function figure(host, w, h, title) {
    var fig = document.createElement("figure");
    host.appendChild(fig);
    var svg = node("svg", {"class": "chart", width: w, height: h, viewBox: "0 0 " + w + " " + h,
      role: "img", "aria-label": title}, fig);
    var cap = document.createElement("figcaption");
    cap.textContent = title;
    fig.appendChild(cap);
    charts++;
    return svg;
  }

  function niceStep(range, n) {
    var raw = range / n, mag = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10));
    var f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  }

  function throughput() {
    var host = document.getElementById("throughput");
    var res = results.filter(function (r) { return r.kind === "max-rate" && r.repetitions && r.repetitions.length; });
    if (!res.length) { host.textContent = "No max-rate results."; return; }
    var groups = [];
    res.forEach(function (r) { if (groups.indexOf(r.workload.name) < 0) { groups.push(r.workload.name); } });
    var m = {l: 62, r: 12, t: 14, b: 62}, gw = Math.max(130, 34 * targets.length + 30);
    var w = m.l + m.r + gw * groups.length, h = 320, ph = h - m.t - m.b;
    var svg = figure(host, w, h, "Maximum sustained throughput, messages/s consumed");
    var top = 0;
    res.forEach(function (r) { top = Math.max(top, r.consume_msgs_per_s.max, r.consume_msgs_per_s.median); });
    if (top <= 0) { top = 1; }
    var step = niceStep(top, 5), ymax = Math.ceil(top / step) * step;
    function y(v) { return m.t + ph - ph * v / ymax; }
    for (var v = 0; v <= ymax + step / 2; v += step) {
      node("line", {"class": "grid", x1: m.l, x2: w - m.r, y1: y(v), y2: y(v)}, svg);
      node("text", {x: m.l - 6, y: y(v) + 4, "text-anchor": "end"}, svg, fmtCount(v));
    }
    node("line", {"class": "axis", x1: m.l, x2: w - m.r, y1: y(0), y2: y(0)}, svg);
    var bw = (gw - 30) / targets.length;
    groups.forEach(function (g, gi) {
      var x0 = m.l + gi * gw + 15;
      // "1KB 4p/4c batch 100": the size on one line, the rest below.
      var cut = g.indexOf(" "), lx = x0 + (gw - 30) / 2;
      node("text", {x: lx, y: h - m.b + 16, "text-anchor": "middle", "font-weight": "bold"}, svg, cut > 0 ? g.slice(0, cut) : g);
      if (cut > 0) { node("text", {x: lx, y: h - m.b + 30, "text-anchor": "middle"}, svg, g.slice(cut + 1)); }
      res.filter(function (r) { return r.workload.name === g; }).forEach(function (r) {
        var s = r.consume_msgs_per_s, x = x0 + targets.indexOf(r.target) * bw;
        var bar = node("rect", {"class": "bar", x: x + 2, y: y(s.median), width: bw - 4,
          height: Math.max(0, y(0) - y(s.median)), fill: color(r.target)}, svg);
        node("title", {}, bar, r.target + " " + g + ": " + fmtCount(s.median) + " msg/s (" +
          fmtCount(s.min) + "–" + fmtCount(s.max) + "), " + r.consume_mb_per_s.median.toFixed(1) + " MB/s");
        var cx = x + bw / 2;
        node("line", {x1: cx, x2: cx, y1: y(s.min), y2: y(s.max), stroke: "#222"}, svg);
        node("line", {x1: cx - 4, x2: cx + 4, y1: y(s.min), y2: y(s.min), stroke: "#222"}, svg);
        node("line", {x1: cx - 4, x2: cx + 4, y1: y(s.max), y2: y(s.max), stroke: "#222"}, svg);
        node("text", {x: cx, y: y(Math.max(s.max, s.median)) - 5, "text-anchor": "middle"}, svg,
          fmtCount(s.median));
      });
    });
    targets.forEach(function (t, i) {
      var lx = m.l + i * 120, ly = h - 14;
      node("rect", {x: lx, y: ly - 9, width: 12, height: 10, fill: color(t)}, svg);
      node("text", {x: lx + 16, y: ly}, svg, t);
    });
  }

  // The percentile axis is log10(1/(1-p)): 90 % at 1, 99 % at 2, 99.9 % at 3.
  function px(p) { return Math.log(100 / (100 - p)) / Math.LN10; }

  function latency(metric) {
    var host = document.getElementById("latency");
    while (host.firstChild) { host.removeChild(host.firstChild); }
    var groups = [];
    results.forEach(function (r) { if (groups.indexOf(r.workload.name) < 0) { groups.push(r.workload.name); } });
    var drawn = 0;
    groups.forEach(function (g) {
      var series = results.filter(function (r) {
        return r.workload.name === g && r.kind === "fixed-rate" && r[metric] && r[metric].curve && r[metric].curve.length;
      });
      if (!series.length) {
        series = results.filter(function (r) {
          return r.workload.name === g && r[metric] && r[metric].curve && r[metric].curve.length;
        });
      }
      if (!series.length) { return; }
      drawn++;
      curves(host, g, series, metric);
    });
    if (!drawn) { host.textContent = "No latency curves for this measure."; }
  }

  function curves(host, group, series, metric) {
    var m = {l: 64, r: 26, t: 12, b: 40}, w = 560, legendH = 16 * series.length + 8, h = 300 + legendH;
    var pw = w - m.l - m.r, ph = h - m.t - m.b - legendH;
    var svg = figure(host, w, h, group);
    var xmax = 4, lo = Infinity, hi = 0;
    series.forEach(function (r) {
      r[metric].curve.forEach(function (pt) {
        xmax = Math.max(xmax, px(pt[0]));
        if (pt[1] > 0) { lo = Math.min(lo, pt[1]); hi = Math.max(hi, pt[1]); }
      });
    });
    if (!(hi > 0)) { lo = 0.001; hi = 1; }
    var ylo = Math.floor(Math.log(lo) / Math.LN10), yhi = Math.ceil(Math.log(hi) / Math.LN10);
    if (yhi <= ylo) { yhi = ylo + 1; }
    var xlo = px(50);
    function x(v) { return m.l + pw * (v - xlo) / (xmax - xlo); }
    function y(v) { return m.t + ph - ph * (Math.log(Math.max(v, Math.pow(10, ylo))) / Math.LN10 - ylo) / (yhi - ylo); }
    [50, 90, 99, 99.9, 99.99, 99.999].forEach(function (p) {
      if (px(p) > xmax + 1e-9) { return; }
      node("line", {"class": "grid", x1: x(px(p)), x2: x(px(p)), y1: m.t, y2: m.t + ph}, svg);
      node("text", {x: x(px(p)), y: m.t + ph + 15, "text-anchor": "middle"}, svg, p + "%");
    });
    node("text", {x: m.l + pw / 2, y: m.t + ph + 31, "text-anchor": "middle"}, svg, "percentile");
    for (var e = ylo; e <= yhi; e++) {
      var v = Math.pow(10, e);
      node("line", {"class": "grid", x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v)}, svg);
      node("text", {x: m.l - 6, y: y(v) + 4, "text-anchor": "end"}, svg, fmtMs(v));
    }
    node("line", {"class": "axis", x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph}, svg);
    node("line", {"class": "axis", x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph}, svg);
    var perTarget = {};
    series.forEach(function (r, i) {
      var k = perTarget[r.target] = (perTarget[r.target] || 0) + 1;
      var d = "";
      r[metric].curve.forEach(function (pt, j) {
        d += (j ? "L" : "M") + x(px(pt[0])).toFixed(1) + "," + y(pt[1]).toFixed(1);
      });
      var path = node("path", {"class": "curve", d: d, fill: "none", stroke: color(r.target), "stroke-width": 2,
        "stroke-dasharray": dashes[(k - 1) % dashes.length]}, svg);
      var label = r.target + " " + (r.kind === "fixed-rate" ? "@" + fmtCount(r.workload.rate) + "/s" +
        (r.fraction_of_max ? " (" + Math.round(r.fraction_of_max * 100) + "% of max)" : "") : "max rate");
      var mg = r[metric].merged;
      node("title", {}, path, label + ": p50 " + fmtMs(mg.p50_ms) + ", p99 " + fmtMs(mg.p99_ms) +
        ", p99.9 " + fmtMs(mg.p99_9_ms) + ", max " + fmtMs(mg.max_ms));
      var ly = h - legendH + 10 + 16 * i;
      node("line", {x1: m.l, x2: m.l + 28, y1: ly - 4, y2: ly - 4, stroke: color(r.target), "stroke-width": 2,
        "stroke-dasharray": dashes[(k - 1) % dashes.length]}, svg);
      node("text", {x: m.l + 34, y: ly}, svg, label + ": p99 " + fmtMs(mg.p99_ms) + ", max " + fmtMs(mg.max_ms) +
        (r.repetitions.length > 1 ? " (" + r.repetitions.length + " repetitions merged)" : ""));
    });
  }

  throughput();
  var select = document.getElementById("metric");
  latency(select.value);
  select.addEventListener("change", function () { latency(select.value); });
  var status = document.getElementById("status");
  status.setAttribute("data-rendered", "ok");
  status.setAttribute("data-charts", String(charts));
  status.textContent = "Drew " + charts + " charts from " + results.length + " results.";
})();
`
