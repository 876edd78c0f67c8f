/* mlops dashboard: one script for the served dashboard and the self-contained report.
 * Served: pages are paths (/model/gnn) and data comes from /api/<path>.
 * Report: pages are hashes (#/model/gnn) and data is the inline JSON keyed by the same paths.
 * No request ever goes anywhere but the server that sent this page. */
(function () {
  "use strict";

  var embedded = document.getElementById("mlops-data");
  var DATA = embedded ? JSON.parse(embedded.textContent) : null;
  var REPORT = DATA !== null;
  var meta = document.querySelector('meta[name="mlops-session"]');
  var SESSION = meta && meta.content !== "{{session}}" ? meta.content : "";
  var ACTIONS = !REPORT && SESSION !== "";
  var app = document.getElementById("app");
  var state = (window.__mlops = { charts: 0, drawn: 0, ready: false, readyAt: null, page: null, skipped: [] });

  // -- helpers ------------------------------------------------------------------------------

  function el(tag, attrs) {
    var node = document.createElement(tag);
    var key;
    attrs = attrs || {};
    for (key in attrs) {
      if (!Object.prototype.hasOwnProperty.call(attrs, key) || attrs[key] == null) continue;
      if (key === "text") node.textContent = attrs[key];
      else if (key === "onclick") node.addEventListener("click", attrs[key]);
      else if (key === "onchange") node.addEventListener("change", attrs[key]);
      else node.setAttribute(key, attrs[key]);
    }
    for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
    return node;
  }
  function add(node, child) {
    if (child == null || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { add(node, c); });
    else node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  function href(path) { return REPORT ? "#" + path : path; }
  function link(path, text, attrs) {
    var a = el("a", Object.assign({ href: href(path), text: text }, attrs || {}));
    if (!REPORT) {
      a.addEventListener("click", function (ev) {
        if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
        ev.preventDefault();
        history.pushState(null, "", path);
        route(true);
      });
    }
    return a;
  }
  function enc(s) { return encodeURIComponent(s); }
  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    return x.toFixed(digits === undefined ? 4 : digits);
  }
  function signed(x, digits) {
    if (x === null || x === undefined) return "unbounded";
    var s = fmt(x, digits);
    return x >= 0 ? "+" + s : s;
  }
  function pvalue(x) { return x === null || x === undefined ? "–" : (x < 1e-4 ? x.toExponential(2) : x.toFixed(4)); }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(2) + "%"; }
  function when(ts) { return ts ? ts.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "never"; }
  function badge(kind, text) { return el("span", { class: "badge " + (kind || ""), text: text || kind || "none" }); }
  function table(headers, rows, caption) {
    return el("table", {},
      caption ? el("caption", { class: "muted", text: caption }) : null,
      el("thead", {}, el("tr", {}, headers.map(function (h) {
        var num = h.charAt(0) === "#";
        return el("th", { scope: "col", class: num ? "num" : null, text: num ? h.slice(1) : h });
      }))),
      el("tbody", {}, rows));
  }
  function td(value, cls) { return el("td", { class: cls || null }, value); }
  function seconds(ts) { return Date.parse(ts) / 1000; }

  async function get(path) {
    var doc;
    if (REPORT) {
      var key = path.split("?")[0];
      if (!(key in DATA)) throw Object.assign(new Error("not in this report: " + key), { status: 404 });
      doc = DATA[key];
    } else {
      var r = await fetch("/api" + path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      doc = await r.json();
      if (!r.ok) throw Object.assign(new Error(doc.error ? doc.error.message : r.statusText), { status: r.status });
    }
    if (doc && doc.skipped) state.skipped = state.skipped.concat(doc.skipped);
    return doc;
  }

  // A view leaves malformed log lines out and says so, under the page's title.
  function skippedNote() {
    if (!state.skipped.length) return null;
    var logs = state.skipped.map(function (s) { return s.lines + " in " + s.log; }).join(", ");
    return el("p", { class: "skipped-note", role: "status", id: "skipped-note",
      text: "Malformed log lines left out of this page: " + logs + ". Fix or remove them; ab evaluate and drift check refuse them unless --skip-invalid." });
  }

  // -- charts -------------------------------------------------------------------------------

  function chartBox(title, id) {
    var box = el("figure", { class: "chart", id: id || null, role: "img", "aria-label": title });
    add(box, el("figcaption", { class: "chart-title", text: title }));
    return box;
  }
  function charted() {
    state.drawn += 1;
    checkReady();
  }
  function checkReady() {
    if (state.drawn >= state.charts && !state.ready) {
      state.ready = true;
      state.readyAt = performance.now();
      document.body.setAttribute("data-ready", "1");
    }
  }
  function width(box) { return Math.max(320, Math.min(1100, (box.parentNode || app).clientWidth - 10)); }

  function plot(box, opts, data) {
    state.charts += 1;
    var done = false;
    opts.width = width(box);
    opts.height = opts.height || 240;
    opts.hooks = opts.hooks || {};
    opts.hooks.draw = (opts.hooks.draw || []).concat([function () {
      if (!done) { done = true; charted(); }
    }]);
    return new uPlot(opts, data, box);
  }

  /* A difference with its interval on a plain canvas: zero line, allowed limit, estimate. */
  function intervalChart(canvas, d, limit) {
    state.charts += 1;
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 600, h = canvas.clientHeight || 56;
    canvas.width = w * ratio; canvas.height = h * ratio;
    var g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    var lo = d.ci[0], hi = d.ci[1], est = d.estimate;
    if (est === null) {  // an arm without requests: nothing to estimate, nothing drawn as one
      g.fillStyle = "#f5f7f9"; g.fillRect(0, 0, w, h);
      g.fillStyle = "#5b6570"; g.font = "12px system-ui, sans-serif"; g.textAlign = "center";
      g.fillText("no estimate: an arm has no requests yet", w / 2, h / 2);
      charted();
      return;
    }
    var vals = [0, est].concat(lo === null ? [] : [lo], hi === null ? [] : [hi], limit == null ? [] : [limit]);
    var min = Math.min.apply(null, vals), max = Math.max.apply(null, vals);
    var pad = (max - min) * 0.15 || Math.abs(est) || 1;
    min -= pad; max += pad;
    function x(v) { return 10 + (w - 20) * (v - min) / (max - min); }
    var mid = h / 2 - 6;
    g.fillStyle = "#f5f7f9"; g.fillRect(0, 0, w, h);
    g.strokeStyle = "#8c959f"; g.lineWidth = 1;
    g.beginPath(); g.moveTo(x(0), 4); g.lineTo(x(0), h - 16); g.stroke();
    if (limit != null) {
      g.setLineDash([4, 3]); g.strokeStyle = "#cf222e";
      g.beginPath(); g.moveTo(x(limit), 4); g.lineTo(x(limit), h - 16); g.stroke();
      g.setLineDash([]);
    }
    var l = lo === null ? 10 : x(lo), r = hi === null ? w - 10 : x(hi);
    g.strokeStyle = "#0969da"; g.lineWidth = 4;
    g.beginPath(); g.moveTo(l, mid); g.lineTo(r, mid); g.stroke();
    g.fillStyle = "#0969da";
    g.beginPath(); g.arc(x(est), mid, 6, 0, 2 * Math.PI); g.fill();
    g.fillStyle = "#1d2329"; g.font = "11px system-ui, sans-serif"; g.textAlign = "center";
    g.fillText("0", x(0), h - 4);
    g.textAlign = "left"; g.fillText(fmt(min, 3), 2, h - 4);
    g.textAlign = "right"; g.fillText(fmt(max, 3), w - 2, h - 4);
    charted();
  }

  // -- actions ------------------------------------------------------------------------------

  function confirmAction(title, change, action, args, after) {
    var dialog = el("dialog", { "aria-labelledby": "confirm-title", id: "confirm" });
    var reason = el("input", { id: "confirm-reason", name: "reason", autocomplete: "off" });
    var status = el("p", { class: "status-line", role: "alert" });
    var ok = el("button", { type: "button", class: "primary", id: "confirm-ok", text: title });
    var cancel = el("button", { type: "button", id: "confirm-cancel", text: "Cancel" });
    add(dialog, [
      el("h2", { id: "confirm-title", text: title + "?" }),
      el("p", { id: "confirm-text", text: change }),
      args.reasonable === false ? null : el("label", { for: "confirm-reason" }, "Reason (recorded in the audit log)", reason),
      status,
      el("div", { class: "buttons" }, cancel, ok)
    ]);
    delete args.reasonable;
    document.body.appendChild(dialog);
    function close() { dialog.close(); dialog.remove(); }
    cancel.addEventListener("click", close);
    dialog.addEventListener("cancel", function () { dialog.remove(); });
    var anyway = null;
    async function send(button, label) {
      button.disabled = true;
      if (reason.value) args.reason = reason.value;
      try {
        var r = await fetch("/api/action/" + action, {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-Mlops-Session": SESSION },
          body: JSON.stringify(args)
        });
        var doc = await r.json();
        if (!r.ok) throw Object.assign(new Error(doc.error ? doc.error.message : r.statusText), { status: r.status });
        close();
        flash = label + ": done.";
        after();
      } catch (err) {
        status.textContent = "error: " + err.message;
        button.disabled = false;
        // A promote the evaluation does not support: the page's --force, confirmed, with a reason.
        if (err.status === 409 && action === "finalize" && args.decision === "promote" && !args.force && !anyway) offerAnyway();
      }
    }
    function offerAnyway() {
      anyway = el("button", { type: "button", class: "danger", id: "confirm-force", text: "Promote anyway" });
      ok.replaceWith(anyway);
      anyway.addEventListener("click", function () {
        if (!reason.value.trim()) {
          status.textContent = "error: promoting anyway needs a reason (it goes into the audit log)";
          reason.focus();
          return;
        }
        args.force = true;
        send(anyway, title + " anyway");
      });
    }
    ok.addEventListener("click", function () { send(ok, title); });
    dialog.showModal();
    (args.reasonable === false ? ok : reason).focus();
  }
  var flash = "";
  function statusLine() {
    var p = el("p", { class: "status-line", role: "status", id: "status", text: flash });
    flash = "";
    return p;
  }
  function actionButton(label, cls, onclick) {
    return el("button", { type: "button", class: cls || null, text: label, onclick: onclick });
  }

  // -- pages --------------------------------------------------------------------------------

  async function overviewPage() {
    var d = await get("/overview");
    document.title = "Overview - mlops";
    var rows = d.model_types.map(function (m) {
      var drift = m.drift;
      var driftCell = drift && drift.level
        ? [link("/drift/" + enc(m.model_type) + "/" + enc(drift.version), drift.level, { class: "badge " + drift.level, "data-level": drift.level }),
           " ", el("span", { class: "muted", text: fmt(drift.score, 3) })]
        : el("span", { class: "muted", text: "no check" });
      var checked = drift ? [when(drift.checked_at), drift.stale ? [" ", badge("stale", "stale")] : null] : "–";
      var test = m.test
        ? [link("/test/" + enc(m.test.name), m.test.name), " ", badge(m.test.decision, m.test.decision),
           el("div", { class: "muted", text: m.test.requests + " requests" })]
        : el("span", { class: "muted", text: "none running" });
      var traffic = m.traffic.map(function (t) { return t.version + " " + t.percentage + "%"; }).join(" / ");
      return el("tr", { "data-model-type": m.model_type },
        td(link("/model/" + enc(m.model_type), m.model_type)),
        td(el("span", { class: "champion mono", text: m.champion || "none" })),
        td(String(m.versions), "num"), td(traffic || "–"), td(test), td(driftCell), td(checked));
    });
    var tests = d.tests.map(function (t) {
      return el("tr", {}, td(link("/test/" + enc(t.name), t.name)), td(link("/model/" + enc(t.model_type), t.model_type)),
        td(badge(t.status, t.status)), td(t.control + " vs " + t.treatment),
        td(String(t.requests.control + t.requests.treatment), "num"), td(when(t.started_at)));
    });
    return [
      el("h1", { text: "Overview" }),
      el("p", { class: "muted", text: "Generated " + when(d.generated_at) + "; a drift check older than " + d.stale_after_s / 3600 + " h is marked stale." }),
      el("h2", { text: "Model types" }),
      d.model_types.length ? table(["Model type", "Champion", "#Versions", "Traffic", "Running A/B test", "Drift", "Last check"], rows, null)
        : el("p", { text: "No model registered yet: mlops register MODEL_TYPE VERSION --path FILE" }),
      el("h2", { text: "A/B tests" }),
      d.tests.length ? table(["Test", "Model type", "Status", "Arms", "#Requests", "Started"], tests) : el("p", { class: "muted", text: "No A/B test yet." })
    ];
  }

  async function modelPage(modelType) {
    var d = await get("/model/" + enc(modelType));
    document.title = modelType + " - mlops";
    var reload = function () { route(true); };
    var rows = d.versions.map(function (v) {
      var acts = [];
      if (ACTIONS && !v.is_champion && !v.deprecated) {
        acts.push(actionButton("Promote " + v.version, null, function () {
          confirmAction("Promote " + v.version, "Make " + modelType + " " + v.version + " the champion with 100% of traffic, replacing " + (d.champion || "no champion") + ".", "promote", { model_type: modelType, version: v.version }, reload);
        }));
        acts.push(actionButton("Deprecate " + v.version, "danger", function () {
          confirmAction("Deprecate " + v.version, "Mark " + modelType + " " + v.version + " deprecated: it can no longer be promoted or tested.", "deprecate", { model_type: modelType, version: v.version }, reload);
        }));
      }
      var drift = v.drift && v.drift.level
        ? link("/drift/" + enc(modelType) + "/" + enc(v.version), v.drift.level + " " + fmt(v.drift.score, 3), { class: "badge " + v.drift.level })
        : el("span", { class: "muted", text: "–" });
      return el("tr", { "data-version": v.version },
        td([el("span", { class: "mono", text: v.version }), v.is_champion ? [" ", badge("ok", "champion")] : null, v.deprecated ? [" ", badge("", "deprecated")] : null,
          Object.keys(d.aliases || {}).sort().filter(function (a) { return d.aliases[a] === v.version; }).map(function (a) { return [" ", el("span", { class: "badge alias", title: "alias", text: a })]; })]),
        td(String(v.traffic_percentage) + "%", "num"),
        td(el("code", { title: v.sha256 || "", text: v.sha256 ? v.sha256.slice(0, 12) + "…" : "–" })),
        td(v.size_bytes == null ? "–" : String(v.size_bytes), "num"),
        td(String(v.requests), "num"), td(pct(v.error_rate), "num"), td(fmt(v.avg_confidence, 3), "num"),
        td(fmt(v.avg_inference_time_ms, 1), "num"), td(drift), td(when(v.registered_at)), td(el("div", { class: "actions" }, acts)));
    });
    var out = [
      el("h1", {}, "Model type ", el("span", { class: "mono", text: modelType })),
      statusLine(),
      el("p", {}, "Champion: ", el("strong", { class: "mono", id: "champion", text: d.champion || "none" })),
      ACTIONS ? el("div", { class: "actions" }, actionButton("Roll back " + modelType, "danger", function () {
        var prev = d.timeline.length > 1 ? d.timeline[d.timeline.length - 2].version : "the previous champion";
        confirmAction("Roll back " + modelType, "Make " + prev + " champion again in place of " + d.champion + ".", "rollback", { model_type: modelType }, reload);
      })) : null,
      el("h2", { text: "Versions" }),
      table(["Version", "#Traffic", "sha256", "#Bytes", "#Requests", "#Error rate", "#Avg confidence", "#Avg ms", "Drift", "Registered", "Actions"], rows),
      el("h2", { text: "Champion timeline" })
    ];
    var timelineRows = d.timeline.map(function (s) {
      return el("tr", {}, td(el("span", { class: "mono", text: s.version })), td(when(s.since)), td(s.until ? when(s.until) : "now"), td(s.why), td(s.actor || "–"));
    });
    var box = chartBox("Champion version over time", "timeline-chart");
    out.push(box, table(["Version", "From", "Until", "Why", "Actor"], timelineRows));
    if (d.tests.length) {
      out.push(el("h2", { text: "A/B tests" }), table(["Test", "Status", "Arms"], d.tests.map(function (t) {
        return el("tr", {}, td(link("/test/" + enc(t.name), t.name)), td(badge(t.status, t.status)), td(t.control + " vs " + t.treatment));
      })));
    }
    if (!d.timeline_complete) {
      out.splice(out.indexOf(box), 0, el("p", { class: "muted", id: "timeline-note", text: "The timeline starts at the oldest of the newest champion changes kept for it; the audit log has them all." }));
    }
    out.push(el("h2", { text: "Recent events" }),
      eventsTable(d.events, "model-events"),
      el("p", { class: "pager" },
        d.events_next != null && !REPORT
          ? link("/events?model_type=" + enc(modelType) + "&before=" + d.events_next, "Older events of " + modelType, { id: "older-events" })
          : null,
        d.events_next != null && !REPORT ? " · " : null,
        link("/events?model_type=" + enc(modelType), "Audit log of " + modelType)));
    return { nodes: out, after: function () { timelineChart(box, d); } };
  }

  function timelineChart(box, d) {
    var order = d.versions.map(function (v) { return v.version; });
    var xs = [], ys = [];
    d.timeline.forEach(function (s) { xs.push(seconds(s.since)); ys.push(order.indexOf(s.version)); });
    if (!xs.length) { add(box, el("p", { class: "muted", text: "No champion yet." })); return; }
    xs.push(Math.max(Date.now() / 1000, xs[xs.length - 1] + 1)); ys.push(ys[ys.length - 1]);
    plot(box, {
      height: 160,
      scales: { x: { time: true }, y: { range: [-0.5, order.length - 0.5] } },
      series: [{}, { label: "champion", stroke: "#0969da", width: 3, paths: uPlot.paths.stepped({ align: 1 }),
        value: function (u, v) { return v == null ? "–" : order[v]; } }],
      axes: [{}, { splits: function () { return order.map(function (_, i) { return i; }); },
        values: function (u, vals) { return vals.map(function (v) { return order[v] || ""; }); }, size: 70 }]
    }, [xs, ys]);
  }

  async function testPage(name) {
    var d = await get("/test/" + enc(name));
    document.title = name + " - mlops";
    var e = d.evaluation, m = e.metrics, t = d.test;
    var reload = function () { route(true); };
    var out = [
      el("h1", {}, "A/B test ", el("span", { class: "mono", text: name })),
      statusLine(),
      el("p", {}, link("/model/" + enc(t.model_type), t.model_type), ": control ", el("span", { class: "mono", text: t.control_version }),
        " vs treatment ", el("span", { class: "mono", text: t.treatment_version }), " (" + t.treatment_traffic_pct + "% of traffic), ",
        badge(e.status, e.status), ", " + e.requests + " requests over " + e.days_elapsed.toFixed(1) + " days, " + e.method + " method, alpha " + e.alpha),
      el("h2", { text: "Decision" }),
      el("p", { class: "recommendation" }, el("span", { class: "badge " + e.decision, id: "decision", "data-decision": e.decision, text: e.decision }), " ", e.recommendation),
      el("ul", { class: "reasons", "aria-label": "Reasons" }, e.reasons.map(function (r) { return el("li", { text: r }); }))
    ];
    if (d.plan) {  // progress against `mlops ab plan` for the test's duration
      var pl = d.plan;
      out.push(el("h2", { text: "Plan" }),
        el("p", { id: "plan-progress", "data-users": String(pl.users), "data-planned": String(pl.planned_users) },
          el("progress", { max: "1", value: String(pl.progress) }), " " + pl.users + " of " + pl.planned_users +
          " planned users (" + (100 * pl.progress).toFixed(0) + "%): in " + pl.days + " days the test promotes a confidence gain of " +
          signed(pl.effect) + " with " + (100 * pl.power).toFixed(0) + "% power (traffic from " + pl.source + ")"));
    }
    if (ACTIONS && t.status === "running") {
      out.push(el("div", { class: "actions" },
        actionButton("Finalize: promote " + t.treatment_version, "primary", function () {
          confirmAction("Finalize " + name + ": promote", "End the test and make " + t.model_type + " " + t.treatment_version + " the champion (refused unless the evaluation says promote).", "finalize", { test: name, decision: "promote" }, reload);
        }),
        actionButton("Finalize: roll back to " + t.control_version, "danger", function () {
          confirmAction("Finalize " + name + ": roll back", "End the test and keep " + t.model_type + " " + t.control_version + " as champion.", "finalize", { test: name, decision: "rollback" }, reload);
        })));
    }
    var arms = ["control", "treatment"].map(function (arm) {
      var a = m[arm];
      return el("tr", { "data-arm": arm }, td(arm), td(el("span", { class: "mono", text: a.version })), td(String(a.requests), "num"),
        td(pct(a.error_rate), "num"), td(fmt(a.avg_confidence), "num"), td(fmt(a.avg_inference_time_ms, 2), "num"));
    });
    out.push(el("h2", { text: "Arms" }), table(["Arm", "Version", "#Requests", "#Error rate", "#Avg confidence", "#Avg inference ms"], arms));
    // The share in the unit the split test counted (users when records carry user ids).
    var unit = m.srm.unit === "user" ? "users" : "requests";
    var count = function (a) { return unit === "users" ? a.users : a.requests; };
    var nt = count(m.treatment) || 0, total = nt + (count(m.control) || 0);
    var observed = total ? (100 * nt / total).toFixed(2) + "% of " + total + " " + unit : "no " + unit + " yet";
    out.push(el("h2", { text: "Split check" }),
      el("p", { id: "srm", "data-mismatch": String(m.srm.mismatch), "data-unit": unit },
        "Configured treatment share " + t.treatment_traffic_pct + "%, observed " + observed + "; ",
        m.srm.testable === false
          ? [badge("", "not tested"), " " + (m.srm.note || "")]
          : ["sample ratio mismatch test over " + unit + ", p = " + fmt(m.srm.p_value, 4) + ": ",
             m.srm.mismatch ? badge("critical", "mismatch")
               : m.srm.judged === false ? badge("", "not judged yet (fewer than 8 " + unit + " in an arm)") : badge("ok", "no mismatch")]));
    out.push(el("h2", { text: "Differences (treatment − control) with their intervals" }));
    var limits = { error_rate_diff: t.max_error_rate_increase, confidence_diff: t.min_confidence_improvement, inference_time_ms_diff: null };
    var labels = { error_rate_diff: "Error rate", confidence_diff: "Confidence", inference_time_ms_diff: "Inference time (ms)" };
    var canvases = [];
    ["confidence_diff", "error_rate_diff", "inference_time_ms_diff"].forEach(function (key) {
      var diff = m[key];
      var canvas = el("canvas", { "aria-hidden": "true" });
      canvases.push([canvas, diff, limits[key]]);
      out.push(el("div", { class: "interval-row chart", "data-metric": key, "data-estimate": String(diff.estimate),
        "data-low": String(diff.ci[0]), "data-high": String(diff.ci[1]), role: "group", "aria-label": labels[key] + " difference" },
        el("div", {}, el("strong", { text: labels[key] }), el("div", { class: "interval-text mono",
          text: diff.estimate === null ? "– (an arm has no requests)" : signed(diff.estimate) + " [" + signed(diff.ci[0]) + ", " + signed(diff.ci[1]) + "]" }),
          el("div", { class: "muted", text: "p = " + pvalue(diff.p_value) + (limits[key] != null ? "; dashed: " + (key === "confidence_diff" ? "needed " : "allowed ") + signed(limits[key]) : "") })),
        canvas));
    });
    var narrowBox = chartBox("Confidence difference and its interval as requests came in", "narrowing-chart");
    out.push(el("h2", { text: "How the interval narrowed" }), narrowBox);
    return { nodes: out, after: function () {
      canvases.forEach(function (c) { intervalChart(c[0], c[1], c[2]); });
      narrowingChart(narrowBox, d.narrowing, t.min_confidence_improvement);
    } };
  }

  function narrowingChart(box, points, goal) {
    if (!points.length) { add(box, el("p", { class: "muted", text: "Too few requests yet." })); return; }
    var xs = points.map(function (p) { return p.requests; });
    var est = points.map(function (p) { return p.confidence_diff.estimate; });
    var lo = points.map(function (p) { return p.confidence_diff.ci[0]; });
    var hi = points.map(function (p) { return p.confidence_diff.ci[1]; });
    var zero = points.map(function () { return 0; });
    var need = points.map(function () { return goal; });
    plot(box, {
      scales: { x: { time: false } },
      series: [{ label: "requests" },
        { label: "estimate", stroke: "#0969da", width: 2, points: { show: true } },
        { label: "low", stroke: "#57606a", dash: [5, 4] },
        { label: "high", stroke: "#57606a", dash: [5, 4] },
        { label: "zero", stroke: "#8c959f", width: 1 },
        { label: "needed", stroke: "#1a7f37", width: 1, dash: [2, 3] }],
      bands: [{ series: [3, 2], fill: "rgba(9,105,218,0.12)" }],
      axes: [{ label: "requests" }, { label: "confidence difference", size: 70 }]
    }, [xs, est, lo, hi, zero, need]);
  }

  var LEVEL_COLOURS = { ok: "rgba(26,127,55,0.10)", monitor: "rgba(154,103,0,0.12)", retrain: "rgba(188,76,0,0.14)", critical: "rgba(207,34,46,0.14)" };

  // The components whose alarm fired (p-value below drift.alarm_alpha, effect at its floor).
  function firedAlarms(alarms) {
    return Object.keys(alarms || {}).filter(function (k) { return alarms[k] && alarms[k].alarm; });
  }

  async function driftPage(modelType, version) {
    var d = await get("/drift/" + enc(modelType) + "/" + enc(version));
    document.title = "Drift " + modelType + " " + version + " - mlops";
    var r = d.report, c = r.components || {}, last = d.last_check;
    var comps = ["statistical", "performance", "distribution"].map(function (k) {
      var v = c[k];
      var bar = el("div", { class: "bar" });
      bar.style.width = (100 * (v || 0)).toFixed(1) + "%";
      return el("tr", { "data-component": k }, td(k), td(fmt(v, 4), "num"), td(fmt(d.weights[k], 2), "num"),
        td(el("div", { class: "bar-track", role: "meter", "aria-label": k + " component", "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(v || 0) }, bar)));
    });
    var historyBox = chartBox("Drift score of each check against the level bands", "history-chart");
    var predBox = chartBox("Prediction: reference vs window (share per bin)", "prediction-chart");
    var confBox = chartBox("Confidence: reference vs window (share per bin)", "confidence-chart");
    var out = [
      el("h1", {}, "Drift of ", link("/model/" + enc(modelType), modelType), " ", el("span", { class: "mono", text: version })),
      el("div", { class: "cards" },
        el("div", { class: "card" }, el("div", { class: "muted", text: "Current drift score" }),
          el("div", { class: "big", id: "drift-score", "data-score": String(r.current_drift_score), text: fmt(r.current_drift_score, 4) }),
          badge(r.level, r.level), r.alert_triggered ? [" ", badge("critical", "alert")] : null,
          firedAlarms(r.alarms).length ? el("div", { class: "muted", id: "drift-alarms", text: "alarm: " + firedAlarms(r.alarms).join(", ") }) : null),
        el("div", { class: "card" }, el("div", { class: "muted", text: "7-day average" }), el("div", { class: "big", text: fmt(r.avg_drift_7d, 4) })),
        el("div", { class: "card" }, el("div", { class: "muted", text: "Samples" }),
          el("div", { text: r.n_reference + " reference, " + r.n_window + " in the window" }), el("div", { class: "muted", text: "KS p = " + pvalue(r.ks_pvalue) })),
        el("div", { class: "card" },
          el("div", { class: "muted", text: "Last recorded check" }),
          el("div", { id: "last-check", "data-ts": last.checked_at || "" }, when(last.checked_at), last.stale ? [" ", badge("stale", "stale")] : null),
          el("div", { class: "muted", text: last.checked_at ? "level " + last.level + ", score " + fmt(last.score, 4) + (last.stale ? "; stale: older than " + d.stale_after_s / 3600 + " h or samples arrived since" : "") : "no check recorded yet (mlops drift check)" }),
          el("div", { class: "muted", text: "Figures above computed" }),
          el("div", { id: "computed-at", "data-ts": r.checked_at }, when(r.checked_at)),
          el("div", { class: "muted", text: (REPORT ? "when this report was written" : "when this page was drawn") + ", from the samples (" + r.status + "; not a recorded check)" }))),
      el("p", { class: "recommendation", text: r.recommendation }),
      el("h2", { text: "Components" }),
      table(["Component", "#Value", "#Weight", "Share of full drift"], comps),
      el("h2", { text: "History" }), historyBox,
      el("p", { class: "muted", text: "Bands: ok ≤ " + d.thresholds.monitor + " < monitor ≤ " + d.thresholds.retrain + " < retrain ≤ " + d.thresholds.critical + " < critical." }),
      el("h2", { text: "Distributions" }),
      el("p", {}, el("span", { class: "legend-swatch swatch-ref" }), "reference", el("span", { class: "legend-swatch swatch-win" }), "window"),
      predBox, confBox
    ];
    var features = featuresSection(d);
    out = out.concat(features.nodes);
    return { nodes: out, after: function () {
      historyChart(historyBox, d);
      histogram(predBox, d.histograms.prediction);
      histogram(confBox, d.histograms.confidence);
      features.after();
    } };
  }

  // Input features, most drifted first, and one feature's reference vs window distribution.
  function featuresSection(d) {
    var r = d.report, order = d.feature_order || [];
    if (!order.length) return { nodes: [], after: function () {} };
    var rows = order.map(function (name) {
      var f = r.features[name], q = f.quality;
      var fired = ["drift", "missing", "type_change"].filter(function (k) { return f[k].alarm; });
      return el("tr", { "data-feature": name, "data-alarm": String(f.alarm) },
        td(el("span", { class: "mono", text: name })), td(f.kind),
        td(fmt(f.drift.effect, 3) + " / " + f.drift.floor, "num"), td(pvalue(f.drift.p_value), "num"),
        td(pct(q.missing_share_reference) + " → " + pct(q.missing_share), "num"),
        td(pct(q.out_of_range_share), "num"),
        td((q.new_categories || []).slice(0, 3).join(", ") || "–"),
        td(fired.length ? badge("critical", fired.join(", ")) : "–"));
    });
    var select = el("select", { id: "feature-select", "aria-label": "Feature shown" },
      order.map(function (name) { return el("option", { value: name, text: name }); }));
    var box = chartBox("A feature: reference vs window (share per bin or category)", "feature-chart");
    var nodes = [
      el("h2", { text: "Input features" }),
      el("p", { class: "muted", id: "features-summary", text: r.drifted_features.length + " of " + order.length +
        " features drifted" + (r.drifted_features.length ? ": " + r.drifted_features.join(", ") : "") +
        ". The score covers prediction and confidence; a feature alarm raises the level to at least retrain (each test at p < " +
        pvalue(r.feature_alpha) + ", drift.alarm_alpha over all feature tests)." }),
      table(["Feature", "Kind", "#Effect / floor", "#p", "#Missing", "#Out of range", "New categories", "Alarm"], rows),
      el("p", {}, "Show ", select), box
    ];
    function draw() {
      var h = d.feature_histograms[select.value];
      while (box.lastChild && box.lastChild.tagName !== "FIGCAPTION") box.removeChild(box.lastChild);
      box.setAttribute("data-feature", select.value);
      if (h.kind === "numeric") { histogram(box, h); return; }
      var t = h.categories.map(function (c, i) {
        return el("tr", {}, td(c), td(pct(h.reference[i]), "num"), td(pct(h.window[i]), "num"));
      });
      add(box, table(["Category", "#Reference", "#Window"], t));
    }
    return { nodes: nodes, after: function () { select.addEventListener("change", draw); draw(); } };
  }

  function historyChart(box, d) {
    var rows = d.history.filter(function (h) { return h.ts; });
    if (!rows.length) { add(box, el("p", { class: "muted", text: "No check recorded yet." })); return; }
    var xs = rows.map(function (h) { return seconds(h.ts); });
    var ys = rows.map(function (h) { return h.score; });
    if (xs.length === 1) { xs = [xs[0] - 3600, xs[0]]; ys = [null, ys[0]]; }
    var th = d.thresholds;
    var top = Math.max(th.critical + 0.1, Math.max.apply(null, ys.filter(function (y) { return y != null; })) + 0.05);
    var bands = [["ok", 0, th.monitor], ["monitor", th.monitor, th.retrain], ["retrain", th.retrain, th.critical], ["critical", th.critical, top]];
    plot(box, {
      scales: { x: { time: true }, y: { range: [0, top] } },
      series: [{}, { label: "drift score", stroke: "#1d2329", width: 2, points: { show: true } }],
      axes: [{}, { label: "score", size: 60 }],
      hooks: { drawClear: [function (u) {
        var g = u.ctx, b = u.bbox;
        bands.forEach(function (band) {
          var y1 = u.valToPos(band[2], "y", true), y0 = u.valToPos(band[1], "y", true);
          g.fillStyle = LEVEL_COLOURS[band[0]];
          g.fillRect(b.left, y1, b.width, y0 - y1);
        });
      }] }
    }, [xs, ys]);
  }

  function histogram(box, h) {
    if (!h.edges.length) { add(box, el("p", { class: "muted", text: "No samples." })); return; }
    var xs = h.edges.slice();
    var ref = h.reference.concat([h.reference[h.reference.length - 1]]);
    var win = h.window.concat([h.window[h.window.length - 1]]);
    plot(box, {
      height: 200,
      scales: { x: { time: false } },
      series: [{},
        { label: "reference", stroke: "#57606a", fill: "rgba(87,96,106,0.25)", paths: uPlot.paths.stepped({ align: 1 }) },
        { label: "window", stroke: "#bc4c00", fill: "rgba(188,76,0,0.25)", paths: uPlot.paths.stepped({ align: 1 }) }],
      axes: [{}, { size: 60 }]
    }, [xs, ref, win]);
  }

  // Audit events as a table, newest first (the events page and a model page's recent ones).
  function eventsTable(events, id) {
    var skip = { ts: 1, event: 1, model_type: 1, version: 1, actor: 1, reason: 1 };
    var body = events.map(function (e) {
      var details = Object.keys(e).filter(function (k) { return !skip[k] && e[k] != null; }).map(function (k) { return k + "=" + (typeof e[k] === "object" ? JSON.stringify(e[k]) : e[k]); }).join(", ");
      return el("tr", { "data-kind": e.event }, td(when(e.ts)), td(e.event), td(e.model_type || "–"), td(e.version || "–"), td(e.actor || "–"), td(e.reason || ""), td(el("span", { class: "muted", text: details })));
    });
    var t = table(["Time", "Kind", "Model type", "Version", "Actor", "Reason", "Details"], body);
    if (id) t.id = id;
    return t;
  }

  async function eventsPage(params) {
    var q = [];
    ["model_type", "kind", "before", "limit"].forEach(function (k) { if (params.get(k)) q.push(k + "=" + enc(params.get(k))); });
    var d = await get("/events" + (q.length ? "?" + q.join("&") : ""));
    document.title = "Audit log - mlops";
    var rows = d.events.filter(function (e) {  // the report holds one list of events: filter here too
      return (!params.get("model_type") || e.model_type === params.get("model_type")) && (!params.get("kind") || e.event === params.get("kind"));
    });
    function select(id, label, options, value) {
      var s = el("select", { id: id, name: id });
      add(s, el("option", { value: "", text: "all" }));
      options.forEach(function (o) { var opt = el("option", { value: o, text: o }); if (o === value) opt.selected = true; add(s, opt); });
      return el("label", { for: id }, label, s);
    }
    var form = el("form", { class: "filters", role: "search", "aria-label": "Filter events" },
      select("model_type", "Model type", d.model_types, params.get("model_type") || ""),
      select("kind", "Kind", d.kinds, params.get("kind") || ""),
      el("button", { type: "submit", text: "Filter" }));
    function eventsPath(before) {
      var p = new URLSearchParams();
      ["model_type", "kind"].forEach(function (k) { var v = form.elements[k].value; if (v) p.set(k, v); });
      if (before != null) p.set("before", before);
      if (params.get("limit")) p.set("limit", params.get("limit"));
      return "/events" + (p.toString() ? "?" + p.toString() : "");
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var path = eventsPath(null);
      if (REPORT) location.hash = path; else { history.pushState(null, "", path); route(); }
    });
    var count = REPORT
      ? rows.length + " events, newest first. This report keeps the newest " + d.kept + " events of the audit log; `mlops history` shows them all."
      : rows.length + " events, newest first" + (params.get("before") ? ", older than the newest page" : "") + ".";
    var pager = REPORT ? null : el("p", { class: "pager" },
      params.get("before") ? link(eventsPath(null), "Newest events", { id: "newest-events" }) : null,
      params.get("before") && d.next != null ? " · " : null,
      d.next != null ? link(eventsPath(d.next), "Older events", { id: "older-events" }) : null);
    return [el("h1", { text: "Audit log" }), form,
      el("p", { class: "muted", id: "event-count", text: count }),
      eventsTable(rows, null), pager];
  }

  // -- routing ------------------------------------------------------------------------------

  function location_() {
    var raw = REPORT ? (location.hash.slice(1) || "/") : location.pathname + location.search;
    var qi = raw.indexOf("?");
    return { path: qi < 0 ? raw : raw.slice(0, qi), params: new URLSearchParams(qi < 0 ? "" : raw.slice(qi + 1)) };
  }

  async function route(moved) {
    var started = performance.now();
    var loc = location_();
    var parts = loc.path.split("/").filter(Boolean).map(decodeURIComponent);
    state.charts = 0; state.drawn = 0; state.ready = false; state.page = loc.path; state.skipped = [];
    document.body.removeAttribute("data-ready");
    var result;
    try {
      if (parts.length === 0) result = await overviewPage();
      else if (parts[0] === "model" && parts.length === 2) result = await modelPage(parts[1]);
      else if (parts[0] === "test" && parts.length === 2) result = await testPage(parts[1]);
      else if (parts[0] === "drift" && parts.length === 3) result = await driftPage(parts[1], parts[2]);
      else if (parts[0] === "events" && parts.length === 1) result = await eventsPage(loc.params);
      else throw Object.assign(new Error("no page at " + loc.path), { status: 404 });
    } catch (err) {
      result = [el("h1", { text: err.status === 404 ? "Not found" : "Error" }), el("p", { class: "error-message", role: "alert", text: err.message }),
        el("p", {}, link("/", "Back to the overview"))];
    }
    var nodes = Array.isArray(result) ? result : result.nodes;
    nodes = [nodes[0], skippedNote()].concat(nodes.slice(1));
    app.replaceChildren.apply(app, [].concat.apply([], nodes.map(function (n) { return n == null ? [] : [n]; })));
    if (!Array.isArray(result) && result.after) result.after();
    if (moved === true) app.focus();  // after a navigation, a screen reader starts at the new page
    state.renderMs = performance.now() - started;
    checkReady();
  }

  if (REPORT) window.addEventListener("hashchange", function () { route(true); });
  else window.addEventListener("popstate", function () { route(true); });
  var mode = document.getElementById("mode");
  if (mode) mode.textContent = REPORT ? "" : (ACTIONS ? "actions allowed" : "read-only");
  route();
})();
