"use strict";
(function () {
  const POLL_MS = 2000;
  const PAGE_LIMIT = 20;
  const TOKEN_KEY = "orgsync.token";
  const WINDOW_MS = 15 * 60 * 1000;      // the charts' span: the broker keeps 15 minutes of readings
  const READING_MS = 1000;               // the broker reads every link and stream once a second
  const GAP_MS = 3 * READING_MS;         // readings further apart than this are not joined (a restart)
  const TIMELINE_EVENTS_MAX = 100;       // sync log records marked on the state timeline (the newest)
  const SVG_NS = "http://www.w3.org/2000/svg";  // a namespace name, not a resource: nothing is loaded

  const view = {
    role: null,          // "admin", "produce", "none", or null before the first answer
    authEnabled: null,
    link: null,          // the link of the detail view, or null for the overview
    syncPages: [],       // "before" values of the sync log pages above the current one
    syncBefore: null,
    deadPages: [],
    deadBefore: null,
    pollCount: 0,
    timer: null,
    busy: false,
    again: false,
    rows: new Map(),     // link name -> overview row
    sourceRows: new Map(),  // source name -> overview row
    signatures: {},      // table id -> JSON of what it shows (skip re-rendering unchanged data)
  };

  const $ = (id) => document.getElementById(id);

  function readToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function writeToken(value) {
    try {
      if (value) { sessionStorage.setItem(TOKEN_KEY, value); } else { sessionStorage.removeItem(TOKEN_KEY); }
    } catch (e) { /* storage disabled: the token lasts until the page is left */ }
  }

  class APIFailure extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path) {
    const headers = { "Accept": "application/json" };
    const token = readToken();
    if (token) { headers["Authorization"] = "Bearer " + token; }
    const response = await fetch(path, { method: method, headers: headers, cache: "no-store", credentials: "omit" });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const detail = body && body.error ? body.error : {};
      throw new APIFailure(response.status, String(detail.code || "http_" + response.status),
        String(detail.message || "HTTP " + response.status));
    }
    return body;
  }

  // Builds an element. attributes: plain object (className, or any attribute name);
  // children: strings (added as text) or nodes. Never parses HTML.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) { continue; }
      if (name === "className") { node.className = value; } else { node.setAttribute(name, String(value)); }
    }
    for (const child of children) {
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(node, text) {
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) { node.textContent = value; }
  }

  function formatDuration(ms) {
    const s = Math.floor(Number(ms) / 1000);
    if (!Number.isFinite(s) || s < 0) { return "—"; }
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + (s % 60) + "s"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m"; }
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function formatTime(ms) {
    if (ms === null || ms === undefined) { return "—"; }
    const date = new Date(Number(ms));
    return Number.isNaN(date.getTime()) ? "—" : date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
  }

  function formatBytes(n) {
    const value = Number(n);
    if (!Number.isFinite(value)) { return "—"; }
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let size = value, unit = 0;
    while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
    return (unit === 0 ? String(size) : size.toFixed(1)) + " " + units[unit];
  }

  function stateLabel(state) {
    return { active: "active", verifying: "verifying", suspended: "suspended", paused: "paused",
             diverged: "diverged: needs an operator" }[state] || String(state);
  }

  function probeText(link) {
    return link.state === "verifying" ? link.probe_successes + "/" + link.probe_threshold : "—";
  }

  function showMessage(text, kind) {
    const node = $("message");
    if (!text) { node.hidden = true; setText(node, ""); node.removeAttribute("data-kind"); return; }
    node.hidden = false;
    node.setAttribute("data-kind", kind || "info");
    setText(node, text);
  }

  function setConnection(status, text) {
    const node = $("connection");
    node.setAttribute("data-status", status);
    setText(node, text);
  }

  const isAdmin = () => view.role === "admin";

  // --- who am I -----------------------------------------------------------------------

  async function refreshRole() {
    try {
      const me = await api("GET", "/v1/whoami");
      view.role = String(me.role);
      view.authEnabled = Boolean(me.auth_enabled);
    } catch (error) {
      if (!(error instanceof APIFailure && error.status === 401)) { throw error; }  // retried next poll
      view.role = "none";
      view.authEnabled = true;
      showMessage("The token was not accepted: " + error.message, "auth");
    }
    const role = $("role");
    role.setAttribute("data-role", view.role);
    if (!view.authEnabled) {
      setText(role, "auth off: full access");
    } else if (view.role === "admin") {
      setText(role, "admin");
    } else if (view.role === "produce") {
      setText(role, "read-only (produce token)");
    } else {
      setText(role, "no token");
    }
    $("token-form").hidden = !view.authEnabled;
    view.rows.forEach((row) => { row.actionsKey = null; });
    view.sourceRows.forEach((row) => { row.actionsKey = null; });
    view.signatures = {};
  }

  // --- overview -----------------------------------------------------------------------

  // A row of the links' or the sources' table (kind "link" or "source"), kept across polls so
  // that its buttons are not rebuilt under the pointer: its name cell, then a cell per column
  // [key, class, testid (default kind-key)]; the "state" cell holds a badge and a held-down mark.
  function keptRow(rows, kind, name, nameCell, columns) {
    let row = rows.get(name);
    if (row) { return row; }
    const cells = {};
    const tds = columns.map(([key, className, testid]) =>
      (cells[key] = el("td", { className: className, "data-testid": testid || kind + "-" + key })));
    const tr = el("tr", { "data-testid": kind + "-row", ["data-" + kind]: name }, nameCell, ...tds);
    cells.badge = el("span", { className: "badge", "data-testid": kind + "-state-label" });
    cells.held = el("span", { className: "held", "data-testid": kind + "-held-down", hidden: "" }, "held down");
    cells.state.append(cells.badge, cells.held);
    row = { tr: tr, cells: cells, actionsKey: null };
    rows.set(name, row);
    return row;
  }

  // Puts `shown` (rows, in order) into tbody and drops the rows of `rows` not among them.
  function placeRows(tbody, rows, shown) {
    shown.forEach((row, index) => {
      if (tbody.children[index] !== row.tr) { tbody.insertBefore(row.tr, tbody.children[index] || null); }
    });
    const kept = new Set(shown);
    for (const [name, row] of rows) {
      if (!kept.has(row)) { row.tr.remove(); rows.delete(name); }
    }
  }

  function linkRow(name) {
    const anchor = el("a", { href: "#/links/" + encodeURIComponent(name), "data-testid": "link-open" }, name);
    return keptRow(view.rows, "link", name, el("td", { "data-testid": "link-name" }, anchor), [
      ["stream"], ["state"], ["lag", "num"], ["cursor", "num"], ["end", "num"], ["probe"], ["time-in-state"],
      ["rejected", "num", "overview-rejected"], ["deadLetters", "num", "overview-dead-letters"],
      ["last-error", "error"], ["actions"]]);
  }

  // The operator buttons of a link or (collection "sources") a capture source.
  function actionButtons(link, testPrefix, collection) {
    const buttons = [];
    if (!isAdmin()) { return buttons; }
    const isSource = collection === "sources";
    const path = "/v1/" + (isSource ? "sources" : "links") + "/" + encodeURIComponent(link.name);
    if (link.state !== "paused") {
      buttons.push(actionButton("Suspend", testPrefix + "suspend", "POST", path + "/suspend",
        "Suspend " + (isSource ? "source " : "link ") + link.name + "?"));
    }
    if (link.state === "diverged") {
      buttons.push(actionButton("Adopt target position", testPrefix + "adopt", "POST", path + "/adopt",
        "Take the offset the target of " + link.name + " holds as this stream's? Only if its data is known to match."));
      return buttons;
    }
    if (link.state !== "active") {
      buttons.push(actionButton("Resume", testPrefix + "resume", "POST", path + "/resume", null));
      buttons.push(actionButton("Force resume", testPrefix + "force-resume", "POST", path + "/resume?force=true",
        isSource ? "Resume source " + link.name + " without verifying its database?"
                 : "Resume link " + link.name + " without verifying the target?"));
    }
    return buttons;
  }

  function actionButton(label, testid, method, path, question) {
    const button = el("button", { type: "button", "data-testid": testid }, label);
    button.addEventListener("click", async () => {
      if (question && !window.confirm(question)) { return; }
      button.disabled = true;
      try {
        await api(method, path);
        showMessage(label + ": done", "info");
      } catch (error) {
        showMessage(label + " failed: " + error.message, "error");
      }
      button.disabled = false;
      poll();
    });
    return button;
  }

  function renderLinks(links) {
    placeRows($("links"), view.rows, links.map((link) => {
      const row = linkRow(link.name);
      const c = row.cells;
      row.tr.setAttribute("data-state", link.state);
      row.tr.setAttribute("data-lag", String(link.lag));
      c.badge.setAttribute("data-state", link.state);
      setText(c.badge, stateLabel(link.state));
      c.held.hidden = !link.held_down;
      setText(c.stream, link.stream);
      setText(c.lag, link.lag);
      setText(c.cursor, link.cursor);
      setText(c.end, link.end_offset);
      setText(c.probe, probeText(link));
      setText(c["time-in-state"], formatDuration(link.time_in_state_ms));
      setText(c.rejected, link.rejected_entries);
      setText(c.deadLetters, link.dead_letters_failed);
      c.deadLetters.className = Number(link.dead_letters_failed) > 0 ? "num attention" : "num";
      c.deadLetters.setAttribute("title", link.dead_letters_failed + " dead letters still failed (open the link to see and retry them)");
      c.rejected.setAttribute("title", link.rejected_entries + " entries rejected by the target");
      setText(c["last-error"], link.last_error || "");
      if (link.last_error) { c["last-error"].setAttribute("title", link.last_error); } else { c["last-error"].removeAttribute("title"); }
      const actionsKey = view.role + "|" + link.state;
      if (row.actionsKey !== actionsKey) {
        c.actions.replaceChildren(...actionButtons(link, "link-"));
        row.actionsKey = actionsKey;
      }
      return row;
    }));
    $("links-empty").hidden = links.length > 0;
  }

  function sourceRow(name) {
    return keptRow(view.sourceRows, "source", name, el("td", { "data-testid": "source-name" }, name), [
      ["stream"], ["state"], ["position"], ["lag-bytes", "num"], ["lag-time", "num"], ["appended", "num"], ["probe"],
      ["time-in-state"], ["last-event"], ["last-error", "error"], ["actions"]]);
  }

  // A lag in ms: in ms below 10 s (a source that keeps up stays under a second), else as a duration.
  function formatLagMs(ms) {
    if (ms === null || ms === undefined) { return "—"; }
    const value = Number(ms);
    return value < 10000 ? value + " ms" : formatDuration(value);
  }

  // sources: the API's statuses; lastEvents: each one's newest sync log record (or undefined).
  function renderSources(sources, lastEvents) {
    placeRows($("sources"), view.sourceRows, sources.map((source, index) => {
      const row = sourceRow(source.name);
      const c = row.cells;
      const state = source.running ? source.state : "stopped";
      row.tr.setAttribute("data-state", state);
      c.badge.setAttribute("data-state", state);
      setText(c.badge, stateLabel(state));
      c.held.hidden = !source.held_down;
      setText(c.stream, source.stream);
      setText(c.position, source.position_lsn === undefined ? "—" : source.position_lsn + " #" + source.position_change);
      c["lag-bytes"].setAttribute("title", source.lag_bytes === undefined ? "not measured yet" : source.lag_bytes + " bytes of WAL the slot holds back");
      setText(c["lag-bytes"], source.lag_bytes === undefined ? "—" : formatBytes(source.lag_bytes));
      setText(c["lag-time"], formatLagMs(source.lag_ms));
      setText(c.appended, source.appended_entries);
      setText(c.probe, source.state === "verifying" ? source.probe_progress : "—");
      setText(c["time-in-state"], formatDuration(source.time_in_state_ms));
      const last = lastEvents[index];
      setText(c["last-event"], last ? last.event + " " + formatTime(last.time_ms) : "—");
      c["last-event"].setAttribute("data-event", last ? last.event : "");
      if (last) { c["last-event"].setAttribute("title", last.reason); } else { c["last-event"].removeAttribute("title"); }
      setText(c["last-error"], source.last_error || "");
      if (source.last_error) { c["last-error"].setAttribute("title", source.last_error); } else { c["last-error"].removeAttribute("title"); }
      const actionsKey = view.role + "|" + source.state;
      if (row.actionsKey !== actionsKey) {
        c.actions.replaceChildren(...actionButtons(source, "source-", "sources"));
        row.actionsKey = actionsKey;
      }
      return row;
    }));
    $("sources-empty").hidden = sources.length > 0;
  }

  function renderIfChanged(id, data, render) {
    const signature = JSON.stringify(data);
    if (view.signatures[id] === signature) { return; }
    view.signatures[id] = signature;
    render();
  }

  function renderStreams(streams) {
    renderIfChanged("streams", streams, () => {
      $("streams").replaceChildren(...streams.map((s) => el("tr", { "data-testid": "stream-row", "data-stream": s.name },
        el("td", { "data-testid": "stream-name" }, s.name),
        el("td", { className: "num", "data-testid": "stream-start" }, s.start_offset),
        el("td", { className: "num", "data-testid": "stream-end" }, s.end_offset),
        el("td", { className: "num", "data-testid": "stream-segments" }, s.segments),
        el("td", { className: "num", "data-testid": "stream-stored-bytes", title: s.stored_bytes + " bytes" }, formatBytes(s.stored_bytes)),
        el("td", { className: "num", "data-testid": "stream-raw-bytes", title: s.raw_bytes + " bytes" }, formatBytes(s.raw_bytes)),
        el("td", { className: "num", "data-testid": "stream-compression" }, Number(s.compression_ratio).toFixed(2) + "×"))));
    });
  }

  // The cluster's members and the links' placement (GET /v1/cluster). Members are the live ones
  // (their announcement has not expired) and any a link is pinned to or leased by that is not.
  function renderCluster(cluster) {
    renderIfChanged("cluster", cluster, () => {
      const links = Array.isArray(cluster.links) ? cluster.links : [];
      const live = new Set(Array.isArray(cluster.members) ? cluster.members.map(String) : []);
      const counts = new Map([...live].map((m) => [m, 0]));
      for (const link of links) {
        if (link.owner !== undefined && link.owner !== null) { counts.set(String(link.owner), (counts.get(String(link.owner)) || 0) + 1); }
      }
      setText($("cluster-node"), String(cluster.node));
      setText($("cluster-lease"), formatDuration(Number(cluster.lease_ms)));
      $("cluster-members").replaceChildren(...[...counts.keys()].sort().map((member) => {
        const health = live.has(member) ? "live" : "absent";
        return el("tr", { "data-testid": "cluster-member-row", "data-member": member },
          el("td", { "data-testid": "cluster-member" }, member, member === String(cluster.node) ? el("span", { className: "muted" }, " (this one)") : ""),
          el("td", { "data-testid": "cluster-member-health", "data-health": health },
            health === "live" ? "live" : "not live: no announcement within the lease"),
          el("td", { className: "num", "data-testid": "cluster-member-links" }, String(counts.get(member))));
      }));
      $("cluster-links").replaceChildren(...links.map((link) => placementRow("link", String(link.link), link)));
      const sources = Array.isArray(cluster.sources) ? cluster.sources : [];
      $("cluster-sources-block").hidden = sources.length === 0;
      $("cluster-sources").replaceChildren(...sources.map((source) => placementRow("source", String(source.source), source)));
    });
  }

  // One row of where a link or a capture source runs: its placement, owner and owner epoch.
  function placementRow(kind, name, placed) {
    const owned = placed.owner !== undefined && placed.owner !== null;
    return el("tr", { "data-testid": `cluster-${kind}-row`, [`data-${kind}`]: name },
      el("td", { "data-testid": `cluster-${kind}` }, name),
      el("td", { "data-testid": `cluster-${kind}-placement` }, String(placed.placement)),
      el("td", { "data-testid": `cluster-${kind}-owner`, className: owned ? "" : "unowned" }, owned ? String(placed.owner) : "nobody holds its lease now"),
      el("td", { className: "num", "data-testid": `cluster-${kind}-epoch` }, placed.owner_epoch === undefined ? "" : String(placed.owner_epoch)));
  }

  // null outside a cluster (404); a cluster whose leases cannot be read now says so in its section.
  async function readCluster() {
    try {
      return { cluster: await api("GET", "/v1/cluster") };
    } catch (error) {
      if (error instanceof APIFailure && error.status === 404) { return null; }
      if (error instanceof APIFailure && error.status === 503) { return { error: error.message }; }
      throw error;
    }
  }

  async function refreshOverview() {
    const [links, streams, sources, cluster] = await Promise.all([
      api("GET", "/v1/links"), api("GET", "/v1/streams"), api("GET", "/v1/sources"), readCluster()]);
    $("cluster").hidden = cluster === null;
    if (cluster !== null) {
      $("cluster-error").hidden = cluster.error === undefined;
      setText($("cluster-error"), cluster.error === undefined ? "" : "The cluster's leases cannot be read now: " + cluster.error);
      if (cluster.cluster) { renderCluster(cluster.cluster); }
    }
    const streamList = Array.isArray(streams.streams) ? streams.streams : [];
    const sourceList = Array.isArray(sources.sources) ? sources.sources : [];
    const [samples, sourceEvents] = await Promise.all([
      Promise.all(streamList.map((s) => api("GET", "/v1/streams/" + encodeURIComponent(s.name) + "/samples?window_ms=" + WINDOW_MS))),
      Promise.all(sourceList.map((s) => api("GET", "/v1/sources/" + encodeURIComponent(s.name) + "/sync-log?limit=1")))]);
    renderLinks(Array.isArray(links.links) ? links.links : []);
    renderSources(sourceList, sourceEvents.map((page) => (Array.isArray(page.records) ? page.records[0] : undefined)));
    renderStreams(streamList);
    renderStreamCharts(samples);
  }


  // --- charts: plain inline SVG ---------------------------------------------------------

  // Builds an SVG element, as el() builds HTML ones (attributes set as text, never parsed).
  function svg(tag, attributes, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) { continue; }
      node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const CHART = { width: 600, height: 150, left: 56, right: 10, top: 10, bottom: 22 };

  // The smallest 1, 2 or 5 × 10^k at or above value (at least 1): the top of a y axis.
  function niceMax(value) {
    if (!(value > 1)) { return 1; }
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) { if (step * power >= value) { return step * power; } }
    return 10 * power;
  }

  function formatNumber(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) { return "—"; }
    if (Math.abs(value) >= 1e6) { return (value / 1e6).toFixed(1) + "M"; }
    if (Math.abs(value) >= 1e4) { return (value / 1e3).toFixed(1) + "k"; }
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  // The chart's time span: the window ending at the newest reading (the broker's clock), or now.
  function span(times) {
    const end = times.length > 0 ? Math.max(...times) : Date.now();
    return { start: end - WINDOW_MS, end: end };
  }

  // x of a time in a chart `width` units wide.
  function xOf(time, range, width) {
    const inner = width - CHART.left - CHART.right;
    return CHART.left + Math.max(0, Math.min(1, (time - range.start) / WINDOW_MS)) * inner;
  }

  function timeAxis(width, height) {
    const nodes = [];
    for (const minutes of [15, 10, 5, 0]) {
      const x = CHART.left + (1 - minutes / 15) * (width - CHART.left - CHART.right);
      nodes.push(svg("text", { x: x, y: height - 6, class: "tick", "text-anchor": minutes === 0 ? "end" : minutes === 15 ? "start" : "middle" },
        minutes === 0 ? "now" : "−" + minutes + " min"));
    }
    return nodes;
  }

  // A line chart of points [{t, v}] (v null: no value), oldest first. label names it for
  // assistive technology; the summary (now, highest) is part of that name.
  function lineChart(testid, label, unit, points) {
    const range = span(points.map((p) => p.t));
    const values = points.map((p) => p.v).filter((v) => v !== null && Number.isFinite(v));
    const top = niceMax(values.length > 0 ? Math.max(...values) : 0);
    const bottom = CHART.height - CHART.bottom;
    const yOf = (v) => bottom - (v / top) * (bottom - CHART.top);
    let path = "", previous = null;
    for (const p of points) {
      if (p.v === null || !Number.isFinite(p.v)) { previous = null; continue; }
      const joined = previous !== null && p.t - previous.t <= GAP_MS;
      // A new piece starts with a half-unit stroke, so that a reading alone shows as a dot.
      path += (joined ? "L" : "M") + xOf(p.t, range, CHART.width).toFixed(1) + " " + yOf(p.v).toFixed(1) + (joined ? "" : "h0.5");
      previous = p;
    }
    const last = values.length > 0 ? values[values.length - 1] : null;
    const summary = values.length === 0 ? label + ", last 15 minutes: no readings yet"
      : label + ", last 15 minutes: now " + formatNumber(last) + " " + unit + ", highest " + formatNumber(Math.max(...values)) + " " + unit;
    const chart = svg("svg", {
      viewBox: "0 0 " + CHART.width + " " + CHART.height, role: "img", "aria-label": summary,
      "data-testid": testid, "data-points": values.length, "data-last": last === null ? "" : last },
      svg("title", {}, summary),
      svg("line", { class: "axis", x1: CHART.left, x2: CHART.width - CHART.right, y1: bottom, y2: bottom }),
      svg("line", { class: "axis", x1: CHART.left, x2: CHART.width - CHART.right, y1: CHART.top, y2: CHART.top }),
      svg("text", { x: CHART.left - 6, y: bottom + 4, class: "tick", "text-anchor": "end" }, "0"),
      svg("text", { x: CHART.left - 6, y: CHART.top + 4, class: "tick", "text-anchor": "end" }, formatNumber(top)),
      ...timeAxis(CHART.width, CHART.height));
    if (path) { chart.appendChild(svg("path", { class: "series", d: path })); }
    return chart;
  }

  // The timeline spans the page's width: twice a chart's units, so its text is not drawn larger.
  const TIMELINE = { width: 1200, height: 64, barTop: 14, barBottom: 40 };

  // Runs of one state (and held-down) from readings [{t, state, held}]: [{from, to, state, held}].
  // A reading stands for the second after it; readings further apart than GAP_MS are not joined.
  function stateRuns(readings) {
    const runs = [];
    for (const r of readings) {
      const run = runs.length > 0 ? runs[runs.length - 1] : null;
      if (run && run.state === r.state && run.held === r.held && r.t - run.to <= GAP_MS - READING_MS) {
        run.to = r.t + READING_MS;
      } else {
        if (run && r.t - run.to <= GAP_MS - READING_MS) { run.to = r.t; }
        runs.push({ from: r.t, to: r.t + READING_MS, state: r.state, held: r.held });
      }
    }
    return runs;
  }

  function stateTimeline(readings, records) {
    const range = span(readings.map((r) => r.t));
    const runs = stateRuns(readings);
    const events = records.filter((r) => r.time_ms >= range.start && r.time_ms <= range.end);
    const totals = {};
    for (const run of runs) { totals[run.state] = (totals[run.state] || 0) + Math.min(run.to, range.end) - Math.max(run.from, range.start); }
    const parts = Object.entries(totals).map(([state, ms]) => state + " " + formatDuration(ms));
    const summary = readings.length === 0 ? "State over the last 15 minutes: no readings yet"
      : "State over the last 15 minutes: " + parts.join(", ") + "; now " + readings[readings.length - 1].state +
        "; " + events.length + " sync log event" + (events.length === 1 ? "" : "s");
    const chart = svg("svg", {
      viewBox: "0 0 " + TIMELINE.width + " " + TIMELINE.height, role: "img", "aria-label": summary,
      "data-testid": "state-timeline", "data-runs": runs.length, "data-events": events.length,
      "data-state": readings.length > 0 ? readings[readings.length - 1].state : "" },
      svg("title", {}, summary));
    for (const run of runs) {
      const x1 = xOf(Math.max(run.from, range.start), range, TIMELINE.width);
      const x2 = xOf(Math.min(run.to, range.end), range, TIMELINE.width);
      if (x2 <= x1) { continue; }
      chart.appendChild(svg("rect", { class: "state-" + run.state, "data-testid": "timeline-run", "data-state": run.state,
        x: x1.toFixed(1), y: TIMELINE.barTop, width: Math.max(0.5, x2 - x1).toFixed(1), height: TIMELINE.barBottom - TIMELINE.barTop },
        svg("title", {}, run.state + (run.held ? " (held down)" : "") + " from " + formatTime(run.from) + " to " + formatTime(run.to) + " UTC")));
      if (run.held) {
        chart.appendChild(svg("rect", { class: "held-down", "data-testid": "timeline-held-down",
          x: x1.toFixed(1), y: TIMELINE.barTop - 6, width: Math.max(0.5, x2 - x1).toFixed(1), height: 4 }));
      }
    }
    // Entries failed or resolved first, so that the link's own state events are drawn on top.
    const isEntryEvent = (record) => String(record.event).startsWith("entry_");
    const ordered = events.filter(isEntryEvent).concat(events.filter((r) => !isEntryEvent(r)));
    for (const record of ordered) {
      const x = xOf(record.time_ms, range, TIMELINE.width).toFixed(1);
      chart.appendChild(svg("g", { class: isEntryEvent(record) ? "event entry" : "event", "data-testid": "timeline-event", "data-event": record.event },
        svg("title", {}, formatTime(record.time_ms) + " UTC " + record.event + ": " + record.reason),
        svg("line", { x1: x, x2: x, y1: TIMELINE.barTop - 4, y2: TIMELINE.barBottom + 4 }),
        svg("circle", { cx: x, cy: TIMELINE.barTop - 7, r: 3 })));
    }
    for (const node of timeAxis(TIMELINE.width, TIMELINE.height)) { chart.appendChild(node); }
    return chart;
  }

  function renderLinkCharts(samples, syncLog) {
    const readings = Array.isArray(samples.samples) ? samples.samples : [];
    const records = Array.isArray(syncLog.records) ? syncLog.records : [];
    renderIfChanged("link-charts", [readings, records], () => {
      $("state-timeline-box").replaceChildren(stateTimeline(
        readings.map((r) => ({ t: Number(r.time_ms), state: String(r.state), held: Boolean(r.held_down) })), records));
      $("chart-lag-box").replaceChildren(lineChart("chart-lag", "Lag", "entries",
        readings.map((r) => ({ t: Number(r.time_ms), v: Number(r.lag) }))));
      $("chart-applied-box").replaceChildren(lineChart("chart-applied", "Applied entries per second", "entries/s",
        readings.map((r) => ({ t: Number(r.time_ms), v: r.applied_per_second === undefined ? null : Number(r.applied_per_second) }))));
    });
  }

  function renderStreamCharts(samplesByStream) {
    renderIfChanged("stream-charts", samplesByStream, () => {
      $("stream-charts").replaceChildren(...samplesByStream.map((body) => {
        const readings = Array.isArray(body.samples) ? body.samples : [];
        const chart = lineChart("chart-appended", "Entries appended to " + body.stream + " per second", "entries/s",
          readings.map((r) => ({ t: Number(r.time_ms), v: r.appended_per_second === undefined ? null : Number(r.appended_per_second) })));
        chart.setAttribute("data-stream", body.stream);
        return el("figure", { className: "chart", "data-testid": "stream-chart", "data-stream": body.stream },
          el("figcaption", {}, body.stream), chart);
      }));
    });
  }

  // --- one link -----------------------------------------------------------------------

  function renderDetail(link) {
    setText($("detail-name"), link.name);
    const badge = $("detail-state");
    badge.setAttribute("data-state", link.state);
    $("detail").setAttribute("data-state", link.state);
    setText(badge, stateLabel(link.state) + (link.held_down ? " (held down)" : ""));
    const facts = [
      ["stream", link.stream], ["cursor", link.cursor], ["end offset", link.end_offset], ["lag", link.lag],
      ["probes", probeText(link)], ["time in state", formatDuration(link.time_in_state_ms)],
      ["last error", link.last_error || "—"], ["suspensions", link.suspensions], ["flaps", link.flaps],
      ["hold-downs", link.hold_downs], ["applied entries", link.applied_entries], ["rejected entries", link.rejected_entries],
      ["failed dead letters", link.dead_letters_failed], ["running", link.running ? "yes" : "no"],
    ];
    $("detail-facts").replaceChildren(...facts.flatMap(([name, value]) => [
      el("dt", {}, name), el("dd", { "data-testid": "fact-" + name.replace(/ /g, "-") }, value)]));
    renderIfChanged("detail-actions", [view.role, link.name, link.state], () => {
      $("detail-actions").replaceChildren(...actionButtons(link, "detail-"));
    });
  }

  function renderSyncLog(page) {
    const records = Array.isArray(page.records) ? page.records : [];
    renderIfChanged("sync-log", records, () => {
      $("sync-log").replaceChildren(...records.map((r) => el("tr", { "data-testid": "sync-log-row", "data-event": r.event, "data-sequence": r.sequence },
        el("td", { className: "num" }, r.sequence),
        el("td", {}, formatTime(r.time_ms)),
        el("td", { "data-testid": "sync-log-event" }, r.event),
        el("td", {}, el("span", { className: "badge", "data-state": r.state }, stateLabel(r.state))),
        el("td", { "data-testid": "sync-log-reason" }, r.reason),
        el("td", { className: "num" }, r.offset === undefined || r.offset === null ? "" : r.offset),
        el("td", {}, r.status || ""),
        el("td", {}, r.target_code || ""))));
      if (records.length === 0) {
        $("sync-log").replaceChildren(el("tr", {}, el("td", { colspan: 8, className: "muted" }, "No records.")));
      }
    });
    view.syncNext = page.next_before === undefined ? null : page.next_before;
    $("sync-older").disabled = view.syncNext === null;
    $("sync-newer").disabled = view.syncPages.length === 0;
  }

  function renderDeadLetters(page, link) {
    const letters = Array.isArray(page.dead_letters) ? page.dead_letters : [];
    renderIfChanged("dead-letters", [view.role, letters], () => {
      $("dead-letters").replaceChildren(...letters.map((d) => {
        const actions = el("td", {});
        if (isAdmin() && d.status === "failed") {
          actions.appendChild(actionButton("Retry", "dead-letter-retry", "POST",
            "/v1/links/" + encodeURIComponent(link) + "/dead-letters/" + encodeURIComponent(d.offset) + "/retry", null));
        }
        return el("tr", { "data-testid": "dead-letter-row", "data-offset": d.offset, "data-status": d.status },
          el("td", { className: "num" }, d.offset),
          el("td", {}, el("span", { className: "badge", "data-state": d.status }, d.status)),
          el("td", {}, formatTime(d.failed_at_ms)),
          el("td", { className: "num" }, d.attempts),
          el("td", { className: "error", title: d.error, "data-testid": "dead-letter-error" }, d.error),
          el("td", {}, d.target_code || ""),
          el("td", { className: "entry", title: d.entry }, el("code", {}, d.entry)),
          actions);
      }));
      if (letters.length === 0) {
        $("dead-letters").replaceChildren(el("tr", {}, el("td", { colspan: 8, className: "muted" }, "No dead letters.")));
      }
    });
    view.deadNext = page.next_before === undefined ? null : page.next_before;
    $("dead-older").disabled = view.deadNext === null;
    $("dead-newer").disabled = view.deadPages.length === 0;
  }

  async function refreshDetail(name) {
    const base = "/v1/links/" + encodeURIComponent(name);
    const syncQuery = "?limit=" + PAGE_LIMIT + (view.syncBefore === null ? "" : "&before=" + view.syncBefore);
    const status = $("dead-status").value;
    const deadQuery = "?limit=" + PAGE_LIMIT + (view.deadBefore === null ? "" : "&before=" + view.deadBefore) +
      (status ? "&status=" + encodeURIComponent(status) : "");
    const [link, syncLog, deadLetters, samples, events] = await Promise.all([
      api("GET", base), api("GET", base + "/sync-log" + syncQuery), api("GET", base + "/dead-letters" + deadQuery),
      api("GET", base + "/samples?window_ms=" + WINDOW_MS), api("GET", base + "/sync-log?limit=" + TIMELINE_EVENTS_MAX)]);
    renderDetail(link);
    renderSyncLog(syncLog);
    renderDeadLetters(deadLetters, name);
    renderLinkCharts(samples, events);
  }

  // --- polling and navigation -----------------------------------------------------------

  async function poll() {
    if (view.busy) { view.again = true; return; }
    view.busy = true;
    view.again = false;
    clearTimeout(view.timer);
    try {
      if (view.role === null) { await refreshRole(); }
      if (view.link === null) { await refreshOverview(); } else { await refreshDetail(view.link); }
      view.pollCount += 1;
      const updated = $("updated");
      updated.setAttribute("data-poll-count", String(view.pollCount));
      setText(updated, "updated " + new Date().toLocaleTimeString());
      setConnection("ok", "connected");
      if ($("message").getAttribute("data-kind") === "auth") { showMessage(null); }
    } catch (error) {
      if (error instanceof APIFailure && (error.status === 401 || error.status === 403)) {
        setConnection("unauthorized", "token needed");
        showMessage(view.authEnabled === false ? error.message :
          "Reading the status needs a token (produce or admin): " + error.message, "auth");
      } else if (error instanceof APIFailure && error.status === 404 && view.link !== null) {
        setConnection("error", "no such link");
        showMessage("No link named " + view.link + ".", "error");
      } else {
        setConnection("error", "broker unreachable");
        showMessage("Cannot read the status: " + error.message, "error");
      }
    } finally {
      view.busy = false;
      // A poll asked for meanwhile (an action, a new page, a new view) runs at once.
      view.timer = setTimeout(poll, view.again ? 0 : POLL_MS);
    }
  }

  function route() {
    const match = /^#\/links\/(.+)$/.exec(location.hash);
    let link = null;
    if (match) {
      try { link = decodeURIComponent(match[1]); } catch (e) { link = null; }
    }
    view.link = link;
    view.syncPages = []; view.syncBefore = null; view.syncNext = null;
    view.deadPages = []; view.deadBefore = null; view.deadNext = null;
    view.signatures = {};
    for (const id of ["state-timeline-box", "chart-lag-box", "chart-applied-box"]) { $(id).replaceChildren(); }
    $("overview").hidden = link !== null;
    $("detail").hidden = link === null;
    $("detail").setAttribute("data-link", link === null ? "" : link);
    document.title = link === null ? "orgsync status" : link + " · orgsync";
    showMessage(null);
    poll();
  }

  function pager(pagesKey, beforeKey, nextKey, older) {
    if (older) {
      if (view[nextKey] === null) { return; }
      view[pagesKey].push(view[beforeKey]);
      view[beforeKey] = view[nextKey];
    } else {
      if (view[pagesKey].length === 0) { return; }
      view[beforeKey] = view[pagesKey].pop();
    }
    poll();
  }

  function start() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("token-input");
      writeToken(input.value.trim());
      input.value = "";
      view.role = null;
      showMessage(null);
      poll();
    });
    $("token-forget").addEventListener("click", () => {
      writeToken("");
      view.role = null;
      poll();
    });
    $("sync-older").addEventListener("click", () => pager("syncPages", "syncBefore", "syncNext", true));
    $("sync-newer").addEventListener("click", () => pager("syncPages", "syncBefore", "syncNext", false));
    $("dead-older").addEventListener("click", () => pager("deadPages", "deadBefore", "deadNext", true));
    $("dead-newer").addEventListener("click", () => pager("deadPages", "deadBefore", "deadNext", false));
    $("dead-status").addEventListener("change", () => { view.deadPages = []; view.deadBefore = null; poll(); });
    window.addEventListener("hashchange", route);
    route();
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
