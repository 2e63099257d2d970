"""The page of ``mixnas report``: one self-contained HTML file (its style, its data and the script that draws it),
and writing it.

The tables (the run at a glance, the best trials, the failures) are written here as HTML, readable without
script. The plots are SVG drawn in the browser by the small vanilla script below, from the report's data
embedded as JSON: no plotting library (plotly.js would add about 3.5 MB to every file, d3 about 280 KB, and
either would have to be inlined to open offline), no font, no request. A Content-Security-Policy in the page
forbids any network access, so a file that opens and draws is self-contained by construction.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

from mixnas.errors import RunError
from mixnas.launch.report import Report, read_run, report_data
from mixnas.launch.rundir import RunPaths
from mixnas.textio import atomic_file, os_reason, path_kind

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --ink: #1d2433; --muted: #5c667a; --line: #d9dde6; --bg: #f6f7fa; --ok: #4a78c2; --front: #d1462f;
  --best: #1f8a4c; --ref: #7d4cc2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  background: var(--bg); }
header, section { max-width: 1280px; margin: 0 auto; padding: 10px 20px; }
header h1 { margin: 14px 0 2px; font-size: 22px; }
header p, .note { color: var(--muted); margin: 2px 0 8px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin-top: 14px; }
h2 { font-size: 17px; margin: 6px 0 10px; }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
table.kv th { width: 150px; }
table.num td, table.num th { text-align: right; }
table.num td:last-child, table.num th:last-child { text-align: right; }
tr.pick { cursor: pointer; }
tr.pick:hover { background: #eef3fb; }
td.reason { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; white-space: pre-wrap;
  word-break: break-word; }
.row { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; }
.plot { flex: 1 1 560px; min-width: 320px; }
.half { flex: 1 1 420px; min-width: 300px; }
aside#detail { flex: 1 1 360px; min-width: 300px; border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 12px; background: #fbfcfe; min-height: 200px; }
aside#detail h3 { margin: 2px 0 6px; font-size: 15px; }
pre.arch { white-space: pre-wrap; word-break: break-all; }
pre { font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; background: #f1f3f8; padding: 6px 8px;
  border-radius: 4px; overflow-x: auto; margin: 6px 0; }
.scroll { overflow-x: auto; }
svg { display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--ink); }
svg .axis line, svg .axis path { stroke: #9aa3b5; }
svg .grid line { stroke: #edf0f5; }
svg .muted { fill: var(--muted); }
svg circle.pt { cursor: pointer; }
svg circle.pt:hover { stroke: #000; stroke-width: 2; }
svg circle.sel { stroke: #000; stroke-width: 3; }
.legend span { margin-right: 14px; color: var(--muted); }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px;
  vertical-align: -1px; }
select { font: inherit; padding: 2px 4px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; background: #eef1f6; color: var(--muted);
  margin-left: 6px; font-size: 12px; font-weight: normal; }
"""

# The page's script: reads the JSON data, draws the SVG plots and the network, answers hover and click. Vanilla
# JavaScript (ES2017), no library; every text it shows goes through textContent (never innerHTML).
SCRIPT = r"""
"use strict";
(function () {
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var KCOL = {1: "#9aa3b5", 3: "#4a78c2", 5: "#2e9e6a", 7: "#e08a1e", 9: "#d1462f", 11: "#8e44ad"};
  var byId = {};
  D.trials.forEach(function (t) { byId[t.t] = t; });
  var pinned = null;

  function el(tag, attrs, parent, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) { if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]); }
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function h(tag, parent, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v, d) {  // d significant digits, trailing zeros of a fraction dropped
    if (v === null || v === undefined) return "-";
    var s = Number(v).toPrecision(d || 5);
    return s.indexOf(".") < 0 || s.indexOf("e") >= 0 ? s : s.replace(/0+$/, "").replace(/\.$/, "");
  }
  function count(v) {
    if (v === null || v === undefined) return "-";
    if (v >= 1e9) return fmt(v / 1e9, 4) + "G";
    if (v >= 1e6) return fmt(v / 1e6, 4) + "M";
    if (v >= 1e3) return fmt(v / 1e3, 4) + "k";
    return String(v);
  }
  function metric(name, v) { return /^(params|macs|flops)$/.test(name) ? count(v) : fmt(v); }
  function lin(d0, d1, r0, r1) {
    var k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
    return function (v) { return r0 + (v - d0) * k; };
  }
  function extent(values, pad) {
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (!(hi > lo)) { var w = Math.abs(lo) * 0.05 || 1; lo -= w; hi += w; }
    var p = (hi - lo) * (pad || 0.06);
    return [lo - p, hi + p];
  }
  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    [1, 2, 5, 10].some(function (m) { if ((hi - lo) / (step * m) <= n) { step *= m; return true; } return false; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-12 * Math.abs(hi); v += step) out.push(+v.toPrecision(12));
    return out;
  }
  function frame(parent, W, H, m, xd, yd, xlabel, ylabel, xfmt) {
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"}, parent);
    var x = lin(xd[0], xd[1], m.l, W - m.r), y = lin(yd[0], yd[1], H - m.b, m.t);
    var g = el("g", {"class": "grid"}, svg), a = el("g", {"class": "axis"}, svg);
    ticks(xd[0], xd[1], 7).forEach(function (v) {
      el("line", {x1: x(v), x2: x(v), y1: m.t, y2: H - m.b}, g);
      el("text", {x: x(v), y: H - m.b + 14, "text-anchor": "middle", "class": "muted"}, a, (xfmt || fmt)(v));
    });
    ticks(yd[0], yd[1], 6).forEach(function (v) {
      el("line", {x1: m.l, x2: W - m.r, y1: y(v), y2: y(v)}, g);
      el("text", {x: m.l - 6, y: y(v) + 4, "text-anchor": "end", "class": "muted"}, a, fmt(v, 4));
    });
    el("path", {d: "M" + m.l + "," + m.t + "V" + (H - m.b) + "H" + (W - m.r), fill: "none"}, a);
    el("text", {x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle"}, a, xlabel);
    el("text", {x: 12, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
                transform: "rotate(-90 12 " + (m.t + H - m.b) / 2 + ")"}, a, ylabel);
    return {svg: svg, x: x, y: y};
  }
  function empty(parent, text) { h("p", parent, text, "note"); }

  // ---- the trial panel (hover shows, click pins) -------------------------------------------------------------
  function showTrial(t) {
    var box = document.getElementById("detail");
    box.textContent = "";
    if (!t) { h("p", box, "Hover over a point to see its trial; click to choose it for the network drawing.", "note"); return; }
    var head = h("h3", box, "trial " + t.t);
    if (t.front) h("span", head, "Pareto front", "badge");
    if (t.t === D.best) h("span", head, "best", "badge");
    if (t.o) h("span", head, t.o + (t.c !== undefined ? " of trial " + t.c : ""), "badge");
    var tb = h("table", box, null, "kv");
    function row(k, v) { var r = h("tr", tb); h("th", r, k); h("td", r, v); }
    row("status", t.s);
    if (t.r !== null) row(D.reward.name === "reward" ? "reward" : D.reward.name, fmt(t.r, 6));
    if (t.sm) {
      row("over " + t.sm.n + " seeds", "reward " + fmt(t.sm.r, 6) + (t.sm.rse !== null ? " ± " + fmt(t.sm.rse, 2) : ""));
      Object.keys(t.sm.m).forEach(function (k) {
        var m = t.sm.m[k];
        row("  " + k + " (mean)", metric(k, m[0]) + (m[1] !== null ? " ± " + fmt(m[1], 2) : ""));
      });
    }
    var k = t.k || {};
    Object.keys(k).forEach(function (n) { row(n, metric(n, k[n])); });
    if (t.why) row("reason", t.why);
    var net = t.a !== undefined ? D.nets[t.a] : null;
    if (net) {
      h("pre", box, net.text).className = "arch";
    }
  }

  // ---- accuracy against latency, Pareto front, reference networks --------------------------------------------
  function scatter() {
    var host = document.getElementById("scatter");
    var ob = D.objectives, pts = D.trials.filter(function (t) {
      return (t.s === "ok" || t.s === "pruned") && !t.o && t.v[0] !== null && t.v[1] !== null;
    });
    if (!pts.length) { empty(host, "No finished trial with both " + ob[0].name + " and " + ob[1].name + " yet."); return; }
    var refs = D.refs.filter(function (r) { return r.x !== null && ob[1].name === "latency_ms"; });
    var xs = pts.map(function (t) { return t.v[1]; }).concat(refs.map(function (r) { return r.x; }));
    var ys = pts.map(function (t) { return t.v[0]; });
    var f = frame(host, 640, 400, {l: 62, r: 16, t: 16, b: 40}, extent(xs), extent(ys),
                  ob[1].name + " (" + ob[1].direction + ")", ob[0].name + " (" + ob[0].direction + ")",
                  /^(params|macs|flops)$/.test(ob[1].name) ? count : null);
    refs.forEach(function (r) {
      var g = el("g", {"class": "ref"}, f.svg), x = f.x(r.x);
      var tr = r.trial !== null ? byId[r.trial] : null;
      el("line", {x1: x, x2: x, y1: 16, y2: 360, stroke: "var(--ref)", "stroke-dasharray": "4 3"}, g);
      var right = x > 640 * 0.6;
      el("text", {x: right ? x - 4 : x + 4, y: 28, fill: "var(--ref)", style: "fill:var(--ref)",
                  "text-anchor": right ? "end" : "start"}, g, r.name + (r.member ? " (in the space)" : ""));
      el("title", {}, g, r.name + ": " + fmt(r.x) + " ms predicted by the table, params " + count(r.params) +
         ", MACs " + count(r.macs) + (tr ? "; trained as trial " + tr.t : "; not trained by this run"));
      if (tr && tr.v[0] !== null) el("path", {d: "M" + x + "," + (f.y(tr.v[0]) - 9) + "l5,9l-5,9l-5,-9z",
                                              fill: "none", stroke: "var(--ref)", "stroke-width": 2}, g);
    });
    var front = pts.filter(function (t) { return t.front; }).sort(function (a, b) { return a.v[1] - b.v[1]; });
    if (front.length > 1) {
      el("path", {d: "M" + front.map(function (t) { return f.x(t.v[1]) + "," + f.y(t.v[0]); }).join("L"),
                  fill: "none", stroke: "var(--front)", "stroke-width": 1.5, "stroke-opacity": 0.6}, f.svg);
    }
    var g = el("g", {id: "points"}, f.svg);
    pts.sort(function (a, b) { return (a.front ? 1 : 0) - (b.front ? 1 : 0); }).forEach(function (t) {
      var color = t.front ? "var(--front)" : (t.s === "ok" ? "var(--ok)" : "#9aa3b5");
      el("circle", {"class": "pt" + (t.front ? " front" : ""), cx: f.x(t.v[1]), cy: f.y(t.v[0]),
                    r: t.front ? 6 : 4, fill: t.s === "pruned" ? "#fff" : color, stroke: color,
                    "fill-opacity": t.front ? 0.95 : 0.7, "data-trial": t.t}, g);
      if (t.t === D.best) el("circle", {cx: f.x(t.v[1]), cy: f.y(t.v[0]), r: 10, fill: "none",
                                       stroke: "var(--best)", "stroke-width": 2, "pointer-events": "none"}, g);
    });
    g.addEventListener("mouseover", function (e) {
      var id = e.target.getAttribute("data-trial");
      if (id !== null) showTrial(byId[id]);
    });
    g.addEventListener("mouseout", function () { showTrial(pinned !== null ? byId[pinned] : null); });
    g.addEventListener("click", function (e) {
      var id = e.target.getAttribute("data-trial");
      if (id !== null) choose(+id);
    });
  }

  // ---- best so far against trainings and against wall time --------------------------------------------------
  function progress(hostId, col, xlabel) {
    var host = document.getElementById(hostId), rows = D.progress;
    if (D.reward.kind === "none") { empty(host, "A Pareto run without a reference point has no single number to follow: see the front above."); return; }
    var have = rows.filter(function (p) { return p[4] !== null; });
    if (!have.length) { empty(host, "No finished trial with a " + D.reward.name + " yet."); return; }
    var scaleX = col === 1 && rows[rows.length - 1][1] > 600 ? 60 : 1;
    var xs = rows.map(function (p) { return p[col] / scaleX; });
    var ys = have.map(function (p) { return p[4]; }).concat(rows.filter(function (p) { return p[3] !== null; })
                                                        .map(function (p) { return p[3]; }));
    var f = frame(host, 520, 260, {l: 62, r: 14, t: 12, b: 40}, extent(xs, 0.03), extent(ys),
                  col === 1 ? xlabel + (scaleX === 60 ? " (min)" : " (s)") : xlabel,
                  (D.reward.kind === "hypervolume" ? "hypervolume" : "best " + D.reward.name) + " so far");
    var g = el("g", {}, f.svg);
    rows.forEach(function (p) {
      if (p[3] !== null) el("circle", {cx: f.x(p[col] / scaleX), cy: f.y(p[3]), r: 2.5, fill: "#9aa3b5"}, g);
    });
    var d = "", prev = null;
    have.forEach(function (p) {
      var x = f.x(p[col] / scaleX), y = f.y(p[4]);
      d += prev === null ? "M" + x + "," + y : "H" + x + "V" + y;
      prev = y;
    });
    d += "H" + f.x(xs[xs.length - 1]);
    el("path", {d: d, fill: "none", stroke: "var(--best)", "stroke-width": 2, "class": "best-line"}, f.svg);
  }

  // ---- the network of the chosen trial, and where its milliseconds go ----------------------------------------
  function network(t) {
    var host = document.getElementById("net"), sum = document.getElementById("lat-summary");
    host.textContent = ""; sum.textContent = "";
    var net = t && t.a !== undefined ? D.nets[t.a] : null;
    if (!net) { empty(host, t ? "Trial " + t.t + " has no architecture to draw." : "No trial to draw yet."); return; }
    if (!net.L) { empty(host, "Not a stage space: the candidate is its choices (shown above), there is no network to draw."); return; }
    // g: [resolution, stem width, last block width, head width, classes, head resolution]; a layer: [block,
    // repeat, in, mid, out, stride, input size, kernels, dilations, channel split, expansion groups, projection
    // groups, SE width, swish, identity skip, has expansion] (report.py, _network); ms: one per part, in order
    var g0 = net.g, L = net.L, ms = net.ms || null;
    // parts in the order the table sums them: stem, every block repeat, head, classifier
    var parts = [{kind: "stem", label: "stem", lines: ["conv 3×3 s2", "3→" + g0[1]], h: g0[1], res: g0[0]}];
    L.forEach(function (l) { parts.push({kind: "layer", l: l, h: l[4], res: l[6]}); });
    parts.push({kind: "head", label: "head", lines: ["conv 1×1", g0[2] + "→" + g0[3], "+ avg pool"], h: g0[3], res: g0[5]});
    parts.push({kind: "fc", label: "classifier", lines: ["fc", g0[3] + "→" + g0[4]], h: g0[4], res: 1});
    var maxC = Math.max.apply(null, parts.map(function (p) { return p.h; }));
    var W = 66, GAP = 10, BGAP = 18, TOP = 44, CARD = 120, TXT = 58, BAR = 90;
    var x = 14, prevBlock = -1;
    parts.forEach(function (p) {
      if (p.kind === "layer" && p.l[0] !== prevBlock) { x += BGAP; prevBlock = p.l[0]; }
      else if (p.kind !== "layer" && p.kind !== "stem") { x += BGAP; prevBlock = -1; }
      p.x = x; x += W + GAP;
    });
    var width = x + 14, height = TOP + CARD + TXT + (ms ? BAR + 40 : 6);
    var svg = el("svg", {width: width, height: height, viewBox: "0 0 " + width + " " + height, id: "net-svg"}, host);
    var base = TOP + CARD;
    // block groups: one box per block string, labelled with its repeats
    var groups = {};
    parts.forEach(function (p) { if (p.kind === "layer") (groups[p.l[0]] = groups[p.l[0]] || []).push(p); });
    Object.keys(groups).forEach(function (b) {
      var ps = groups[b], x0 = ps[0].x - 6, x1 = ps[ps.length - 1].x + W + 6;
      el("rect", {x: x0, y: TOP - 18, width: x1 - x0, height: CARD + TXT + 14, rx: 6, fill: "#f7f9fc",
                  stroke: "#d9dde6", "class": "block"}, svg);
      el("text", {x: x0 + 4, y: TOP - 6, "class": "muted"}, svg, "block " + b + (net.R[b] > 1 ? " ×" + net.R[b] : ""));
    });
    var prevRes = null;
    parts.forEach(function (p, i) {
      var hgt = 16 + (CARD - 16) * Math.sqrt(p.h / maxC), top = base - hgt;
      if (p.res !== prevRes && p.kind !== "fc") {
        el("text", {x: p.x, y: 14, "class": "muted"}, svg, p.res + "×" + p.res);
        el("line", {x1: p.x, x2: p.x, y1: 18, y2: TOP - 20, stroke: "#c5cbd8"}, svg);
      }
      prevRes = p.res;
      var g = el("g", {"class": "part " + p.kind, "data-part": i}, svg);
      if (p.kind !== "layer") {
        el("rect", {x: p.x, y: top, width: W, height: hgt, rx: 4, fill: "#e6e9f0", stroke: "#9aa3b5"}, g);
        el("text", {x: p.x + W / 2, y: base + 14, "text-anchor": "middle"}, g, p.label);
        p.lines.forEach(function (s, j) { el("text", {x: p.x + W / 2, y: base + 28 + 12 * j, "text-anchor": "middle", "class": "muted"}, g, s); });
      } else {
        var l = p.l, mid = l[3], ks = l[7], ds = l[8], splits = l[9], y = top;
        el("rect", {x: p.x, y: top, width: W, height: hgt, rx: 4, fill: "#fff",
                    stroke: l[5] > 1 ? "#1d2433" : "#9aa3b5", "stroke-width": l[5] > 1 ? 2 : 1}, g);
        splits.forEach(function (c, j) {   // the MixConv: one band per kernel group, as tall as its channels
          var bh = (hgt - 4) * c / mid;
          el("rect", {x: p.x + 2, y: y + 2, width: W - 4, height: Math.max(bh - 1, 1),
                      fill: KCOL[ks[j]] || "#555", "class": "kgroup"}, g);
          if (bh >= 12) el("text", {x: p.x + W / 2, y: y + 2 + bh / 2 + 4, "text-anchor": "middle",
                                     fill: "#fff", style: "fill:#fff"}, g,
                           ks[j] + "×" + ks[j] + (ds[j] > 1 ? " d" + ds[j] : ""));
          y += bh;
        });
        var e = Math.round(mid / l[2] * 10) / 10;
        var tags = [];
        if (l[12] > 0) tags.push("SE" + l[12]);
        tags.push(l[13] ? "swish" : "relu");
        el("text", {x: p.x + W / 2, y: base + 14, "text-anchor": "middle"}, g, "e" + e + " s" + l[5]);
        el("text", {x: p.x + W / 2, y: base + 28, "text-anchor": "middle", "class": "muted"}, g, l[2] + "→" + l[4]);
        el("text", {x: p.x + W / 2, y: base + 40, "text-anchor": "middle", "class": "muted"}, g, tags.join(" "));
        el("text", {x: p.x + W / 2, y: base + 52, "text-anchor": "middle", "class": "muted"}, g,
           "k" + ks.join(".") + (l[10] > 1 ? " a" + l[10] : "") + (l[11] > 1 ? " p" + l[11] : ""));
        el("title", {}, g, "block " + l[0] + ", repeat " + l[1] + ": " + l[2] + "→" + l[3] + "→" + l[4] +
           " channels, stride " + l[5] + ", input " + l[6] + "×" + l[6] + ", kernels " + ks.join(",") +
           " split " + splits.join("+") + (l[12] ? ", SE " + l[12] : ", no SE") + (l[13] ? ", swish" : ", ReLU") +
           (l[14] ? ", identity skip" : "") + (l[10] > 1 ? ", " + l[10] + " expansion groups" : "") +
           (l[11] > 1 ? ", " + l[11] + " projection groups" : ""));
      }
    });
    if (ms) {
      var known = ms.filter(function (v) { return v !== null; }), maxMs = Math.max.apply(null, known.concat([1e-9]));
      var total = known.reduce(function (a, b) { return a + b; }, 0), b0 = base + TXT + BAR + 14;
      el("text", {x: 14, y: base + TXT + 16, "class": "muted"}, svg, "ms per part in the latency table");
      var bars = el("g", {id: "lat-bars"}, svg);
      parts.forEach(function (p, i) {
        var v = ms[i];
        if (v === null) { el("text", {x: p.x + W / 2, y: b0 - 4, "text-anchor": "middle", "class": "muted"}, bars, "missing"); return; }
        var bh = Math.max(1, (BAR - 14) * v / maxMs);
        el("rect", {x: p.x + 8, y: b0 - bh, width: W - 16, height: bh, fill: "#e08a1e", "class": "lat"}, bars);
        el("text", {x: p.x + W / 2, y: b0 - bh - 3, "text-anchor": "middle"}, bars, fmt(v, 3));
        el("text", {x: p.x + W / 2, y: b0 + 13, "text-anchor": "middle", "class": "muted"}, bars,
           fmt(100 * v / total, 2) + "%");
      });
    }
    var lat = t.k && t.k.latency_ms !== undefined ? t.k.latency_ms : null;
    var text;
    if (ms && net.sum !== null) {
      text = "Latency table: the " + ms.length + " parts sum to " + fmt(net.sum) + " ms; the table predicts " +
        fmt(net.pred) + " ms" + (D.table.calibrated ? " (with its calibration)" : "") + ".";
    } else if (ms) {
      text = "Latency table: " + net.missing + " of the " + ms.length + " parts are missing from the table, no prediction.";
    } else if (D.table && !D.table.ok) {
      text = "The run's latency table (" + D.table.path + ") cannot be read now: no per-part breakdown.";
    } else {
      text = "The run has no latency table: no per-part breakdown.";
    }
    if (lat !== null) text += " Trial " + t.t + "'s latency_ms: " + fmt(lat) + " ms (" + D.latency_source + ").";
    sum.textContent = text;
  }

  function choose(id) {
    var t = byId[id];
    if (!t) return;
    pinned = t.t;
    var svgPts = document.querySelectorAll("#points circle.pt");
    for (var i = 0; i < svgPts.length; i++) {
      svgPts[i].classList.toggle("sel", +svgPts[i].getAttribute("data-trial") === t.t);
    }
    var pick = document.getElementById("pick");
    if (pick.value !== String(t.t)) {
      if (!pick.querySelector('option[value="' + t.t + '"]')) { var o = h("option", pick, "trial " + t.t); o.value = t.t; }
      pick.value = String(t.t);
    }
    showTrial(t);
    network(t);
  }

  function picker() {
    var pick = document.getElementById("pick");
    function add(group, t) {
      var o = h("option", group, "trial " + t.t + (t.t === D.best ? " (best)" : "") +
                (t.r !== null ? ", " + (D.reward.name) + " " + fmt(t.r) : "") +
                (t.k && t.k[D.objectives[0].name] !== undefined ? ", " + D.objectives[0].name + " " + fmt(t.k[D.objectives[0].name]) : ""));
      o.value = t.t;
    }
    var withNet = D.trials.filter(function (t) { return t.a !== undefined && !t.o; });
    var gf = h("optgroup", pick); gf.label = "Pareto front";
    withNet.filter(function (t) { return t.front; }).forEach(function (t) { add(gf, t); });
    var go = h("optgroup", pick); go.label = "other trials";
    withNet.filter(function (t) { return !t.front; }).forEach(function (t) { add(go, t); });
    pick.addEventListener("change", function () { choose(+pick.value); });
    var rows = document.querySelectorAll("tr.pick");
    for (var i = 0; i < rows.length; i++) {
      rows[i].addEventListener("click", function () { choose(+this.getAttribute("data-trial")); });
    }
    var first = D.best !== null ? D.best : (D.front.length ? D.front[0] : (withNet.length ? withNet[withNet.length - 1].t : null));
    if (first !== null) choose(first); else { showTrial(null); network(null); }
  }

  scatter();
  progress("by-trial", 0, "trainings finished");
  progress("by-time", 1, "wall time since the first ask");
  picker();
  document.body.setAttribute("data-drawn", performance.now().toFixed(1));  // ms since navigation: load + draw
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "", pick: bool = False) -> str:
    """An HTML table of text cells; with ``pick``, rows choose their trial (second cell) when clicked."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        attrs = f' class="pick" data-trial="{_e(row[1])}"' if pick else ""
        cells = "".join(f'<td{" class=reason" if h in ("reason", "earlier attempts") else ""}>{_e(c)}</td>'
                        for h, c in zip(header, row))
        body.append(f"<tr{attrs}>{cells}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


SHOWN_PROBLEMS = 20  # more rows than this are folded away (the page opens on the plots, not on a long table)


def _problem_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return '<p class="note">None.</p>'
    table = _table(header, rows)
    if len(rows) <= SHOWN_PROBLEMS:
        return table
    return f"<details><summary>{len(rows)} trials (click to show)</summary>{table}</details>"


def _json_for_script(data: Any) -> str:
    """JSON that cannot end the ``<script>`` element it sits in (``</script>``, ``<!--`` are escaped)."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_page(report: Report) -> str:
    """The whole page of ``report``."""
    data = report.data
    y, x = (o["name"] for o in data["objectives"][:2])
    glance = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in report.glance)
    top_header, top_rows = report.top
    problems_header, problem_rows = report.problems
    running_header, running_rows = report.running
    best = "best reward" if data["reward"]["kind"] == "reward" else data["reward"]["name"]
    if data["reward"]["name"] not in ("reward", "hypervolume"):
        best = f"best {data['reward']['name']}"
    refs = ("; dashed lines: reference architectures (arch presets) at the latency the run's table predicts for them"
            if data["refs"] else "")
    three = (f" (the front is over all {len(data['objectives'])} objectives; this plot shows the first two)"
             if len(data["objectives"]) > 2 else "")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mixnas report: {_e(report.title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<header><h1>mixnas report: {_e(report.title)}</h1><p>{_e(report.subtitle)}</p>",
        "<noscript><p>The plots and the network drawing need JavaScript; the tables below do not.</p></noscript>"
        "</header>",
        f'<section id="glance"><h2>The run at a glance</h2><table class="kv">{glance}</table></section>',
        f'<section id="front"><h2>{_e(y)} against {_e(x)}</h2>',
        '<p class="legend"><span><i class="swatch" style="background:var(--ok)"></i>trained trial</span>'
        '<span><i class="swatch" style="background:var(--front)"></i>Pareto front</span>'
        '<span><i class="swatch" style="border:2px solid var(--best)"></i>best trial</span>'
        '<span><i class="swatch" style="border:1px solid #9aa3b5"></i>pruned</span></p>',
        '<div class="row"><div id="scatter" class="plot"></div><aside id="detail"></aside></div>',
        f'<p class="note">Every trained trial with both values{three}{refs}. Hover over a point for its block '
        "strings and metrics; click it to draw its network below.</p></section>",
        f'<section id="progress"><h2>{_e(best.capitalize())} so far</h2><div class="row">'
        '<div id="by-trial" class="half"></div><div id="by-time" class="half"></div></div>'
        '<p class="note">Grey dots: each finished training; line: the best so far. A line still climbing at the '
        "right edge: the search is still improving.</p></section>",
        '<section id="network"><h2>The network of <select id="pick" aria-label="trial"></select></h2>',
        '<p class="note">One box per block string, one card per block repeat: bands are the MixConv kernel groups, '
        "as tall as their channels (3×3 blue, 5×5 green, 7×7 orange, 9×9 red, 11×11 purple); card height grows with "
        "the output width; a dark border is a stride-2 layer; eN = expansion, sN = stride, SE = squeeze-and-excite "
        "width.</p>",
        '<div id="net" class="scroll"></div><p id="lat-summary" class="note"></p></section>',
        '<section id="ranking"><h2>Best trials</h2>',
        _table(top_header, top_rows, "num", pick=True) if top_rows else '<p class="note">No successful trial yet.</p>',
        "</section>",
        '<section id="problems"><h2>Failed, diverged, infeasible, pruned and screened trials</h2>',
        _problem_table(problems_header, problem_rows),
    ]
    if running_rows:
        parts += ["<h2>Running now</h2>", _table(running_header, running_rows)]
    if report.copies:
        copies = ", ".join(f"trial {t} = trial {c}" for t, c in report.copies)
        parts.append(f'<p class="note">Copied (the architecture of an earlier trial, not trained again): '
                     f"{_e(copies)}.</p>")
    parts += [
        "</section>",
        f'<script type="application/json" id="report-data">{_json_for_script(data)}</script>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one self-contained HTML page."""
    return render_page(report_data(read_run(run_dir)))


def output_path(run_dir: str | Path, out: str | Path | None) -> Path:
    """Where the report goes (``RUN_DIR/report.html`` by default), refused when a folder, a device or a FIFO is
    there (one line naming it)."""
    path = Path(out) if out is not None else RunPaths(Path(run_dir)).root / "report.html"
    kind = path_kind(path)
    if kind == "dir":
        raise RunError(f"{path}: is a folder, expected a file to write the report into")
    if kind == "other":
        raise RunError(f"{path}: is a device, FIFO or socket, expected a file to write the report into")
    return path


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, int]:
    """Write the report of ``run_dir`` atomically (a reader never sees half a page); returns its path and size in
    bytes."""
    path = output_path(run_dir, out)
    page = render_report(run_dir).encode("utf-8")
    try:
        with atomic_file(path, "wb") as fh:
            fh.write(page)
    except OSError as exc:
        raise RunError(f"{path}: cannot write the report ({os_reason(exc)})") from None
    return path, len(page)
