// Forewarn's web UI: plain JavaScript over the agent's JSON API, no build step and nothing
// loaded from elsewhere (air-gapped hosts). Pages: alerts, problems (tickets, history, chart),
// forecasts and anomaly scores, silences (create, expire: only with the admin API), targets,
// rules. Every page is a function that fetches, then renders into #main.
"use strict";

const state = { admin: false, page: "alerts", timer: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "onsubmit" || k === "onchange") e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

async function api(path, options) {
  const r = await fetch(path, options);
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
  if (!r.ok) {
    const msg = body && typeof body === "object" ? (body.error || JSON.stringify(body)) : String(body || r.statusText);
    throw new Error(`${r.status}: ${msg}`);
  }
  return body && typeof body === "object" && "status" in body && "data" in body ? body.data : body;
}

function fmtTime(t) {
  if (t === null || t === undefined || t === "" || String(t).startsWith("0001-")) return "never";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const parts = [];
  for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    if (s >= n || (u === "s" && parts.length === 0)) { parts.push(Math.floor(s / n) + u); s %= n; }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

function labelChips(labels, skip) {
  return el("span", { class: "labels" }, Object.entries(labels || {})
    .filter(([k]) => !(skip || []).includes(k))
    .map(([k, v]) => el("span", { class: "chip" }, `${k}="${v}"`)));
}

function badge(text) { return el("span", { class: `badge ${String(text).toLowerCase()}` }, text); }

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty || "Nothing here.");
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function quoteMatchers(labels, keep) {
  return Object.entries(labels).filter(([k]) => !keep || keep.includes(k))
    .map(([k, v]) => `${k}="${String(v).replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`).join(", ");
}

function silenceButton(labels) {
  if (!state.admin) return null;
  return el("button", { class: "small", onclick: () => { location.hash = "#/silences?matchers=" + encodeURIComponent(quoteMatchers(labels)); } }, "Silence");
}

// ---- pages ------------------------------------------------------------------------------------

async function pageAlerts(main) {
  const data = await api("/api/v1/alerts");
  const rows = data.alerts.map((a) => el("tr", {},
    el("td", {}, a.labels.alertname), el("td", {}, badge(a.state)),
    el("td", {}, labelChips(a.labels, ["alertname"])), el("td", {}, fmtTime(a.activeAt)),
    el("td", { class: "num" }, a.value), el("td", {}, a.annotations.summary || ""),
    el("td", {}, silenceButton(a.labels))));
  main.append(el("h1", {}, "Alerts"), table(["Alert", "State", "Labels", "Active since", "Value", "Summary", ""], rows,
    "No pending or firing alerts."));
}

async function pageProblems(main, params) {
  const data = await api("/api/v1/problems");
  const rows = data.problems.map((p) => el("tr", { class: params.get("key") === p.dedup_key ? "selected" : null },
    el("td", {}, el("a", { href: `#/problems?key=${p.dedup_key}` }, p.rule)), el("td", {}, badge(p.state)),
    el("td", {}, labelChips(p.group_labels, ["alertname"])), el("td", {}, p.title),
    el("td", {}, fmtTime(p.started_at)), el("td", {}, p.sink + (p.ticket ? ` #${p.ticket}` : "")),
    el("td", {}, p.detail), el("td", {}, silenceButton(p.group_labels))));
  main.append(el("h1", {}, "Problems"), table(["Rule", "State", "Group", "Title", "Since", "Ticket", "Detail", ""], rows,
    "No problems: nothing has fired, or every problem has cleared and been forgotten."));
  const key = params.get("key");
  const p = data.problems.find((x) => x.dedup_key === key);
  if (p) main.append(await problemDetail(p));
}

async function problemDetail(p) {
  const box = el("section", { class: "detail", id: "problem-detail" }, el("h2", {}, `${p.rule}: ${p.title || p.dedup_key}`));
  box.append(el("p", { class: "muted" }, `Dedup key ${p.dedup_key} · state ${p.state} · since ${fmtTime(p.started_at)}`));
  try {
    box.append(await ruleChart(p.rule, p.group_labels));
  } catch (e) { box.append(el("p", { class: "error" }, `Chart: ${e.message}`)); }
  const attempts = p.remediation || [];
  if (attempts.length) {
    box.append(el("h3", {}, "Remediation"));
    box.append(table(["Started", "Remediation", "Status", "Took", "What", "Detail"], attempts.map((a) => el("tr", {},
      el("td", {}, fmtTime(a.started_at)), el("td", {}, a.remediation), el("td", {}, badge(a.status)),
      el("td", {}, a.finished_at === null ? "" : fmtDuration(a.finished_at - a.started_at)),
      el("td", {}, a.description), el("td", {}, a.detail)))));
    for (const a of attempts) if (a.output) box.append(el("pre", { class: "body remediation-output" }, a.output));
  }
  const tickets = (await api(`/api/v1/tickets?dedup_key=${encodeURIComponent(p.dedup_key)}`)).tickets;
  if (!tickets.length) box.append(el("p", { class: "muted" }, `No ticket in the local store (sink ${p.sink}).`));
  for (const t of tickets) {
    const full = (await api(`/api/v1/tickets?id=${encodeURIComponent(t.id)}`)).tickets[0];
    box.append(el("h3", {}, `Ticket ${full.id}: ${full.title} `, badge(full.status)));
    box.append(el("pre", { class: "body" }, full.body));
    for (const c of full.comments || []) {
      box.append(el("div", { class: "comment" }, el("div", { class: "muted" }, `${fmtTime(c.at)} · ${c.action} (#${c.sequence})`),
        el("pre", {}, c.body)));
    }
  }
  return box;
}

async function ruleChart(ruleName, groupLabels) {
  const groups = (await api("/api/v1/rules?type=alert")).groups;
  let rule = null;
  for (const g of groups) for (const r of g.rules) if (r.name === ruleName && !rule) rule = r;
  if (!rule) return el("p", { class: "muted" }, "The rule is no longer loaded.");
  const spec = rule.forecast || null;
  const span = spec ? Math.min(spec.lookback, 6 * 3600) : 3600;
  const end = Date.now() / 1000, start = end - span, step = Math.max(1, Math.ceil(span / 240));
  const q = new URLSearchParams({ query: rule.query, start: String(start), end: String(end), step: String(step) });
  const res = (await api("/api/v1/query_range?" + q.toString())).result;
  const want = Object.entries(groupLabels || {}).filter(([k]) => k !== "alertname");
  const series = res.filter((s) => want.every(([k, v]) => !(k in s.metric) || s.metric[k] === v)).slice(0, 5);
  const fig = el("figure", { class: "chart" });
  if (!series.length) { fig.append(el("p", { class: "muted" }, `No data for ${rule.query} in the last ${fmtDuration(span)}.`)); return fig; }
  const W = 760, H = 220, L = 60, B = 24;
  const pts = series.flatMap((s) => s.values.map(([t, v]) => [t, parseFloat(v)])).filter(([, v]) => isFinite(v));
  let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
  if (spec && isFinite(spec.threshold)) { lo = Math.min(lo, spec.threshold); hi = Math.max(hi, spec.threshold); }
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => L + ((t - start) / (end - start)) * (W - L - 10);
  const y = (v) => 10 + (1 - (v - lo) / (hi - lo)) * (H - 10 - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
  root.append(svg("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, y1: 10, x2: L, y2: H - B, class: "axis" }));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    const t = svg("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }); t.textContent = Number(v.toPrecision(3)); root.append(t);
  }
  for (const t of [start, (start + end) / 2, end]) {
    const e = svg("text", { x: x(t), y: H - 6, class: "tick", "text-anchor": "middle" }); e.textContent = new Date(t * 1000).toISOString().slice(11, 16); root.append(e);
  }
  series.forEach((s, i) => {
    const d = s.values.map(([t, v], j) => `${j ? "L" : "M"}${x(t).toFixed(1)},${y(parseFloat(v)).toFixed(1)}`).join("");
    root.append(svg("path", { d, class: `line c${i % 5}` }));
  });
  if (spec && isFinite(spec.threshold)) {
    root.append(svg("line", { x1: L, y1: y(spec.threshold), x2: W - 10, y2: y(spec.threshold), class: "threshold" }));
  }
  fig.append(root, el("figcaption", {}, `${rule.query} over the last ${fmtDuration(span)}` + (spec ? `; threshold ${spec.threshold} (${spec.direction})` : "")));
  return fig;
}

async function pageForecasts(main) {
  const data = await api("/api/v1/forecasts");
  main.append(el("h1", {}, "Forecasts and anomaly scores"));
  if (!data.rules.length) main.append(el("p", { class: "muted" }, "No forecast or anomaly rule has produced a value yet."));
  for (const r of data.rules) {
    main.append(el("h2", {}, `${r.rule} `, badge(r.kind)));
    if (r.kind === "forecast") {
      main.append(table(["Series", "ETA", "Interval", "Probability"], r.series.map((s) => el("tr", {},
        el("td", {}, labelChips(s.labels, ["alertname"])),
        el("td", {}, s.eta === null ? "no breach predicted" : fmtDuration(s.eta)),
        el("td", {}, s.eta === null ? "–" : `${fmtDuration(s.etaLow)} – ${s.etaHigh === null ? "∞" : fmtDuration(s.etaHigh)}`),
        el("td", { class: "num" }, s.probability === null || s.probability === undefined ? "–" : `${Math.round(s.probability * 100)}%`)))));
    } else {
      main.append(table(["Series", "Score"], r.series.map((s) => {
        const bar = el("span", { class: "bar" }); bar.style.width = `${Math.round((s.score || 0) * 100)}%`;
        return el("tr", {}, el("td", {}, labelChips(s.labels, ["alertname"])),
          el("td", { class: "num" }, el("span", { class: "meter" }, bar), " ", (s.score || 0).toFixed(3)));
      })));
    }
  }
}

function parseMatchers(text) {
  const out = [];
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^,]*)\s*(?:,|$)/y;
  let m;
  text = text.trim().replace(/^\{/, "").replace(/\}$/, "");
  while (re.lastIndex < text.length && (m = re.exec(text)) !== null) {
    const raw = m[3].trim();
    const value = raw.startsWith('"') ? JSON.parse(raw) : raw;
    out.push({ name: m[1], value, isRegex: m[2].includes("~"), isEqual: !m[2].startsWith("!") });
    if (m[0] === "") break;
  }
  if (!out.length || re.lastIndex < text.length) throw new Error(`cannot read matchers ${JSON.stringify(text)}`);
  return out;
}

function matcherText(m) { return `${m.name}${m.isEqual ? "" : "!"}${m.isRegex ? "=~" : "="}${JSON.stringify(m.value)}`; }

async function pageSilences(main, params) {
  main.append(el("h1", {}, "Silences"));
  if (state.admin) {
    const msg = el("p", { id: "silence-message", class: "muted" });
    const form = el("form", { id: "silence-form", class: "form", onsubmit: async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      try {
        const hours = parseFloat(f.get("hours"));
        const body = { matchers: parseMatchers(String(f.get("matchers"))), startsAt: new Date().toISOString(),
          endsAt: new Date(Date.now() + hours * 3600e3).toISOString(), createdBy: String(f.get("createdBy")),
          comment: String(f.get("comment")) };
        const r = await api("/api/v1/silences", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        location.hash = "#/silences?created=" + r.silenceID;
      } catch (e) { msg.className = "error"; msg.textContent = e.message; }
    } },
    el("label", {}, "Matchers ", el("input", { name: "matchers", id: "silence-matchers", size: 60, required: true,
      placeholder: 'alertname="FilesystemWillFill", mountpoint=~"/var.*"', value: params.get("matchers") || "" })),
    el("label", {}, "Hours ", el("input", { name: "hours", type: "number", min: "0.1", step: "0.1", value: "2", size: 4 })),
    el("label", {}, "By ", el("input", { name: "createdBy", id: "silence-author", required: true, size: 12 })),
    el("label", {}, "Comment ", el("input", { name: "comment", id: "silence-comment", size: 30 })),
    el("button", { type: "submit", id: "silence-create" }, "Create silence"));
    main.append(form, msg);
    if (params.get("created")) { msg.textContent = `Created silence ${params.get("created")}.`; }
  } else {
    main.append(el("p", { class: "muted" }, "Read-only: start the agent with --web.enable-admin-api to create and expire silences here."));
  }
  const list = await api("/api/v1/silences");
  const rows = list.map((s) => el("tr", { "data-silence": s.id },
    el("td", { class: "mono" }, s.id.slice(0, 8)), el("td", {}, badge(s.status.state)),
    el("td", {}, s.matchers.map((m) => el("span", { class: "chip" }, matcherText(m)))),
    el("td", {}, fmtTime(s.startsAt)), el("td", {}, s.endsAt ? fmtTime(s.endsAt) : "never"),
    el("td", {}, s.createdBy), el("td", {}, s.comment),
    el("td", {}, state.admin && s.status.state !== "expired" && s.source !== "config"
      ? el("button", { class: "small", onclick: async () => {
        try { await api(`/api/v1/silence/${s.id}`, { method: "DELETE" }); render(); } catch (e) { alert(e.message); }
      } }, "Expire") : null)));
  main.append(table(["ID", "State", "Matchers", "Starts", "Ends", "By", "Comment", ""], rows, "No silences."));
}

async function pageTargets(main) {
  const data = await api("/api/v1/targets");
  const rows = data.activeTargets.map((t) => el("tr", {},
    el("td", {}, t.scrapePool), el("td", {}, el("a", { href: t.scrapeUrl }, t.scrapeUrl)), el("td", {}, badge(t.health)),
    el("td", {}, labelChips(t.labels, ["job"])), el("td", {}, fmtTime(t.lastScrape)),
    el("td", { class: "num" }, `${(t.lastScrapeDuration * 1000).toFixed(1)} ms`), el("td", { class: "error" }, t.lastError)));
  main.append(el("h1", {}, "Targets"), table(["Job", "Endpoint", "Health", "Labels", "Last scrape", "Duration", "Error"], rows,
    "No scrape targets configured (host metrics are collected directly)."));
}

function specText(r) {
  if (r.forecast) { const f = r.forecast; return `forecast ${f.model}: ${f.direction} ${f.threshold} within ${fmtDuration(f.horizon)} (lookback ${fmtDuration(f.lookback)}, confidence ${f.confidence})`; }
  if (r.anomaly) { const a = r.anomaly; return `anomaly: sensitivity ${a.sensitivity}, ${a.direction}, seasonality ${a.seasonality}`; }
  return "";
}

async function pageRules(main) {
  const data = await api("/api/v1/rules");
  main.append(el("h1", {}, "Rules"));
  for (const g of data.groups) {
    main.append(el("h2", {}, `${g.name} `, el("span", { class: "muted" }, `${g.file} · every ${fmtDuration(g.interval)} · last ${fmtTime(g.lastEvaluation)}`)));
    main.append(table(["Rule", "Type", "Query", "Detector", "State", "Health"], g.rules.map((r) => el("tr", {},
      el("td", {}, r.name), el("td", {}, r.type), el("td", { class: "mono" }, r.query), el("td", {}, specText(r)),
      el("td", {}, r.state ? badge(r.state) : ""), el("td", {}, badge(r.health), r.lastError ? el("div", { class: "error" }, r.lastError) : null)))));
  }
  if (!data.groups.length) main.append(el("p", { class: "muted" }, "No rule files loaded."));
}

const PAGES = { alerts: pageAlerts, problems: pageProblems, forecasts: pageForecasts, silences: pageSilences, targets: pageTargets, rules: pageRules };

async function render() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || location.pathname.replace(/^\//, "") || "alerts").split("?");
  const page = PAGES[path] ? path : "alerts";
  state.page = page;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  const main = document.getElementById("main");
  const fresh = el("div", { id: "page", "data-page": page });
  try {
    await PAGES[page](fresh, new URLSearchParams(query || ""));
  } catch (e) {
    fresh.append(el("p", { class: "error" }, `Could not load: ${e.message}`));
  }
  main.replaceChildren(fresh);
  document.getElementById("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)}Z`;
  document.body.dataset.loaded = page;
}

async function start() {
  try {
    const flags = await api("/api/v1/status/flags");
    state.admin = flags["web.enable-admin-api"] === "true";
  } catch (e) { state.admin = false; }
  document.getElementById("mode").textContent = state.admin ? "admin" : "read-only";
  window.addEventListener("hashchange", render);
  await render();
  // Refresh pages without forms every 15 s.
  state.timer = setInterval(() => { if (state.page !== "silences") render(); }, 15000);
}

start();
