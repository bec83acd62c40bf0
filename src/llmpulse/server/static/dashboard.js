/* llmpulse dashboard: polls the server's own API every few seconds and draws with uPlot.
 *
 * Every request goes to this page's origin. With API keys configured, an API call answers 401: the
 * page then shows only the key prompt, keeps the key in sessionStorage (this tab only) and sends it
 * as `Authorization: Bearer <key>` on every API call. Data is written with textContent, never as
 * HTML.
 */
(() => {
  "use strict";

  const POLL_MS = 5000;
  const KEY_STORE = "llmpulse.apiKey";
  const THEME_STORE = "llmpulse.theme";
  const RANGES = { 15: "last 15 minutes", 60: "last hour", 360: "last 6 hours", 1440: "last 24 hours" };
  const CHART_HEIGHT = 220;

  const $ = (selector) => document.querySelector(selector);
  const html = document.documentElement;

  const state = { tenant: "", route: "", model: "", minutes: 60, top: "cost" };
  let generation = 0; // bumped by every refresh; an answer to an older one is dropped
  let timer = null;
  let waitingForVisible = false;
  let lastSeries = null;
  const charts = new Map(); // element id → uPlot
  const chartWidths = new Map();
  let filterLists = "";

  class AuthError extends Error {}

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // ---------------------------------------------------------------- formatting

  const countFormat = new Intl.NumberFormat();
  const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const shortTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmtCount = (v) => (isNum(v) ? countFormat.format(v) : "–");
  const fmtCompact = (v) => (isNum(v) ? compactFormat.format(v) : "–");
  const fmtPercent = (v) => (isNum(v) ? `${(v * 100).toFixed(v > 0 && v < 0.001 ? 2 : 1)}%` : "–");

  function fmtMs(v) {
    if (!isNum(v)) return "–";
    if (v >= 10000) return `${(v / 1000).toFixed(1)} s`;
    if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
    return `${Math.round(v)} ms`;
  }

  // axis labels: as short as the tick values allow ("2.5 s", "$0.05")
  const trim = (v, digits) => String(Number(v.toPrecision(digits)));
  const axisMs = (v) => (!isNum(v) ? "" : v === 0 ? "0" : v >= 1000 ? `${trim(v / 1000, 3)} s` : `${trim(v, 3)} ms`);
  const axisUsd = (v) => (!isNum(v) ? "" : `$${trim(v, 3)}`);

  function fmtUsd(v) {
    if (!isNum(v)) return "–";
    if (v === 0) return "$0.00";
    if (Math.abs(v) >= 1) {
      return `$${v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
    }
    const decimals = Math.min(8, Math.max(2, 2 - Math.floor(Math.log10(Math.abs(v)))));
    return `$${v.toFixed(decimals)}`;
  }

  // ---------------------------------------------------------------- URL and filter state

  function readUrl() {
    const q = new URLSearchParams(location.search);
    state.tenant = q.get("tenant") || "";
    state.route = q.get("route") || "";
    state.model = q.get("model") || "";
    const minutes = Number(q.get("range"));
    state.minutes = minutes in RANGES ? minutes : 60;
    const top = q.get("top");
    state.top = ["cost", "p95_latency", "requests", "errors"].includes(top) ? top : "cost";
  }

  function writeUrl() {
    const q = new URLSearchParams();
    if (state.tenant) q.set("tenant", state.tenant);
    if (state.route) q.set("route", state.route);
    if (state.model) q.set("model", state.model);
    if (state.minutes !== 60) q.set("range", String(state.minutes));
    if (state.top !== "cost") q.set("top", state.top);
    const search = q.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
  }

  function scopeParams(extra) {
    const params = { minutes: state.minutes };
    if (state.tenant) params.tenant_id = state.tenant;
    if (state.route) params.route = state.route;
    if (state.model) params.model = state.model;
    return Object.assign(params, extra);
  }

  // ---------------------------------------------------------------- API

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE);
    } catch {
      return null;
    }
  }

  async function api(path, params) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
    }
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(url, { headers, cache: "no-store", credentials: "same-origin" });
    if (response.status === 401) {
      if (key) {
        sessionStorage.removeItem(KEY_STORE);
        throw new AuthError("That API key was not accepted. Check it and try again.");
      }
      throw new AuthError("");
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
      throw new HttpError(response.status, message);
    }
    return body;
  }

  // ---------------------------------------------------------------- refresh loop

  async function refresh() {
    clearTimeout(timer);
    waitingForVisible = false;
    const gen = ++generation;
    const scope = scopeParams();
    try {
      const [dims, series, byModel, byRoute, recent] = await Promise.all([
        api("/v1/metrics/dimensions", { tenant_id: state.tenant, minutes: state.minutes }),
        api("/v1/metrics/timeseries", scope),
        api("/v1/metrics/breakdown", scopeParams({ by: "model", sort: state.top, limit: 10 })),
        api("/v1/metrics/breakdown", scopeParams({ by: "route", sort: state.top, limit: 10 })),
        // recent calls may be unavailable (a Kafka event log): the rest of the page still shows
        api("/v1/calls/recent", scopeParams({ limit: 25 })).catch((error) => {
          if (error instanceof AuthError || (error instanceof HttpError && error.status === 403)) throw error;
          return { calls: [], unavailable: error instanceof Error ? error.message : String(error) };
        }),
      ]);
      if (gen !== generation) return;
      showDashboard();
      renderFilters(dims);
      renderScope(series);
      renderTotals(series.total);
      renderCharts(series.series);
      renderBreakdown("#by-model", "model", byModel.rows);
      renderBreakdown("#by-route", "route", byRoute.rows);
      renderRecent(recent.calls, recent.unavailable);
      $("#load-error").hidden = true;
      setLive(true, `Live · updated ${timeFormat.format(new Date())}`);
    } catch (error) {
      if (gen !== generation) return;
      if (error instanceof AuthError) {
        showPrompt(error.message);
        return; // no polling until a key is given
      }
      if (error instanceof HttpError && error.status === 403 && state.tenant) {
        // this API key belongs to another tenant: show the key's own
        state.tenant = "";
        writeUrl();
        refresh();
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      $("#load-error").textContent = `Could not load the metrics: ${message}. Retrying…`;
      $("#load-error").hidden = false;
      setLive(false, "Offline · retrying");
    }
    if (gen === generation) schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (document.hidden) {
        waitingForVisible = true;
      } else {
        refresh();
      }
    }, POLL_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && waitingForVisible) refresh();
  });

  function setLive(ok, text) {
    const live = $("#live");
    live.textContent = text;
    live.classList.toggle("ok", ok);
    live.classList.toggle("bad", !ok);
  }

  // ---------------------------------------------------------------- key prompt

  function showPrompt(message) {
    clearTimeout(timer);
    $("#dashboard").hidden = true;
    $("#forget-key").hidden = true;
    $("#auth").hidden = false;
    const error = $("#auth-error");
    error.textContent = message;
    error.hidden = !message;
    setLive(false, "API key required");
    $("#api-key").focus();
  }

  function showDashboard() {
    $("#auth").hidden = true;
    $("#dashboard").hidden = false;
    $("#forget-key").hidden = !storedKey();
  }

  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#api-key");
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    input.value = "";
    $("#auth").hidden = true;
    setLive(false, "Connecting…");
    refresh();
  });

  $("#forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    location.reload();
  });

  // ---------------------------------------------------------------- rendering

  function cell(row, text, className, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    if (title) td.title = title;
    row.appendChild(td);
    return td;
  }

  function fillSelect(select, names, allLabel, selected, withAll = true) {
    const options = (withAll ? [""] : []).concat(names);
    if (selected && !options.includes(selected)) options.push(selected);
    select.replaceChildren(
      ...options.map((name) => {
        const option = document.createElement("option");
        option.value = name;
        option.textContent = name || allLabel;
        return option;
      }),
    );
    select.value = selected;
  }

  function renderFilters(dims) {
    const lists = JSON.stringify([dims.tenant_id, dims.tenants, dims.routes, dims.models, state.tenant, state.route, state.model]);
    if (lists === filterLists) return; // unchanged: leave the controls alone
    filterLists = lists;
    // with an API key the server reads the key's tenant only: offer just that one
    const keyTenant = !state.tenant && dims.tenant_id ? dims.tenant_id : "";
    if (keyTenant) {
      fillSelect($("#f-tenant"), [keyTenant], "", keyTenant, false);
    } else {
      fillSelect($("#f-tenant"), dims.tenants, "All tenants", state.tenant);
    }
    fillSelect($("#f-route"), dims.routes, "All routes", state.route);
    fillSelect($("#f-model"), dims.models, "All models", state.model);
  }

  function renderScope(series) {
    const parts = [
      series.tenant_id ? `tenant ${series.tenant_id}` : "all tenants",
      series.route ? `route ${series.route}` : "all routes",
      series.model ? `model ${series.model}` : "all models",
    ];
    const from = shortTime.format(new Date(series.from));
    const to = shortTime.format(new Date(series.to));
    $("#scope").textContent = `${parts.join(" · ")} — ${RANGES[state.minutes]} (${from}–${to})`;
  }

  const KPI_FORMATS = {
    requests: fmtCount,
    errors: fmtCount,
    p50_latency_ms: fmtMs,
    p95_latency_ms: fmtMs,
    p95_ttft_ms: fmtMs,
    total_tokens: fmtCount,
    estimated_cost_usd: fmtUsd,
  };

  function renderTotals(total) {
    for (const [name, format] of Object.entries(KPI_FORMATS)) {
      const value = $(`.kpi[data-kpi="${name}"] .value`);
      const v = total[name];
      value.textContent = format(v);
      value.dataset.value = v === null || v === undefined ? "" : String(v);
    }
    const errors = $('.kpi[data-kpi="errors"] .value');
    errors.classList.toggle("has-errors", total.errors > 0);
    const rate = $('[data-kpi-sub="error_rate"]');
    rate.textContent = isNum(total.error_rate) ? `${fmtPercent(total.error_rate)} error rate` : "";
    rate.dataset.value = isNum(total.error_rate) ? String(total.error_rate) : "";
    $('[data-kpi-sub="tokens_split"]').textContent = total.requests
      ? `${fmtCompact(total.prompt_tokens)} in · ${fmtCompact(total.completion_tokens)} out`
      : "";
  }

  function renderBreakdown(selector, by, rows) {
    const body = $(`${selector} tbody`);
    if (!rows.length) {
      const tr = document.createElement("tr");
      cell(tr, "No traffic in this range.", "empty").colSpan = 6;
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(
      ...rows.map((row) => {
        const tr = document.createElement("tr");
        tr.dataset.name = row[by];
        cell(tr, row[by], "name", row[by]);
        cell(tr, fmtCount(row.requests), "num");
        cell(tr, isNum(row.error_rate) && row.errors ? `${fmtCount(row.errors)} (${fmtPercent(row.error_rate)})` : "0", "num");
        cell(tr, fmtUsd(row.estimated_cost_usd), "num");
        cell(tr, fmtMs(row.p95_latency_ms), "num");
        cell(tr, fmtMs(row.p95_ttft_ms), "num");
        return tr;
      }),
    );
  }

  function renderRecent(calls, unavailable) {
    const body = $("#recent tbody");
    if (!calls.length) {
      const tr = document.createElement("tr");
      const text = unavailable ? `Recent calls are not available: ${unavailable}` : "No calls in this range.";
      cell(tr, text, "empty").colSpan = 9;
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(
      ...calls.map((call) => {
        const tr = document.createElement("tr");
        if (call.request_id) tr.dataset.requestId = call.request_id;
        cell(tr, timeFormat.format(new Date(call.timestamp)), "", call.timestamp);
        cell(tr, call.tenant_id, "name", call.tenant_id);
        cell(tr, call.route, "name", call.route);
        cell(tr, call.model, "name", call.model);
        const status = cell(tr, "");
        const pill = document.createElement("span");
        pill.className = `status status-${call.status}`;
        pill.textContent = call.status;
        status.appendChild(pill);
        cell(tr, fmtMs(call.latency_ms), "num");
        cell(tr, `${fmtCount(call.input_tokens)} / ${fmtCount(call.output_tokens)}`, "num");
        cell(tr, fmtUsd(call.cost_usd), "num");
        cell(tr, call.error || "", "err", call.error || "");
        return tr;
      }),
    );
  }

  // ---------------------------------------------------------------- charts (uPlot)

  const CHARTS = [
    {
      id: "chart-requests",
      axis: fmtCompact,
      series: [
        { field: "requests", label: "Requests", color: "--c1", format: fmtCount, fill: true },
        { field: "errors", label: "Errors", color: "--c2", format: fmtCount },
      ],
    },
    {
      id: "chart-latency",
      axis: axisMs,
      series: [
        { field: "p50_latency_ms", label: "p50", color: "--c4", format: fmtMs },
        { field: "p95_latency_ms", label: "p95", color: "--c1", format: fmtMs },
        { field: "p95_ttft_ms", label: "p95 TTFT", color: "--c3", format: fmtMs },
      ],
    },
    {
      id: "chart-tokens",
      axis: fmtCompact,
      series: [
        { field: "prompt_tokens", label: "Prompt", color: "--c1", format: fmtCount, fill: true },
        { field: "completion_tokens", label: "Completion", color: "--c5", format: fmtCount },
      ],
    },
    {
      id: "chart-cost",
      axis: axisUsd,
      series: [{ field: "estimated_cost_usd", label: "Cost", color: "--c4", format: fmtUsd, fill: true }],
    },
  ];

  const cssVar = (name) => getComputedStyle(html).getPropertyValue(name).trim();

  function chartData(def, series) {
    const xs = series.window_start.map((s) => Date.parse(s) / 1000);
    return [xs, ...def.series.map((s) => series[s.field])];
  }

  // a minute with data between two without draws no line: show such values as dots
  function isolatedPoints(u, seriesIdx) {
    const ys = u.data[seriesIdx];
    const found = [];
    for (let i = 0; i < ys.length; i++) {
      if (ys[i] !== null && (i === 0 || ys[i - 1] === null) && (i === ys.length - 1 || ys[i + 1] === null)) {
        found.push(i);
      }
    }
    return found;
  }

  function zeroBased(u, min, max) {
    const top = isNum(max) && max > 0 ? max * 1.1 : 1;
    return [0, top];
  }

  function createChart(def, data) {
    const el = document.getElementById(def.id);
    const muted = cssVar("--muted");
    const grid = cssVar("--grid");
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const width = Math.max(240, el.clientWidth);
    chartWidths.set(def.id, width);
    const opts = {
      width,
      height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: zeroBased } },
      axes: [axis, { ...axis, size: 70, values: (u, ticks) => ticks.map(def.axis) }],
      series: [
        { value: (u, v) => (isNum(v) ? shortTime.format(new Date(v * 1000)) : "–") },
        ...def.series.map((s) => {
          const color = cssVar(s.color);
          return {
            label: s.label,
            stroke: color,
            width: 2,
            fill: s.fill ? `${color}22` : undefined,
            points: { show: true, size: 6, fill: color, filter: isolatedPoints },
            value: (u, v) => s.format(v),
          };
        }),
      ],
    };
    return new uPlot(opts, data, el);
  }

  function renderCharts(series) {
    lastSeries = series;
    for (const def of CHARTS) {
      const data = chartData(def, series);
      const chart = charts.get(def.id);
      if (chart) {
        chart.setData(data);
      } else {
        charts.set(def.id, createChart(def, data));
      }
    }
  }

  function rebuildCharts() {
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    if (lastSeries) renderCharts(lastSeries);
  }

  const resizer = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const chart = charts.get(entry.target.id);
      const width = Math.max(240, Math.floor(entry.target.clientWidth));
      if (chart && chartWidths.get(entry.target.id) !== width) {
        chartWidths.set(entry.target.id, width);
        chart.setSize({ width, height: CHART_HEIGHT });
      }
    }
  });
  for (const def of CHARTS) resizer.observe(document.getElementById(def.id));

  // ---------------------------------------------------------------- theme and print

  const darkQuery = matchMedia("(prefers-color-scheme: dark)");
  const printQuery = matchMedia("print");

  function effectiveTheme() {
    return html.dataset.theme || (darkQuery.matches ? "dark" : "light");
  }

  function applyTheme(theme) {
    if (theme === "dark" || theme === "light") {
      html.dataset.theme = theme;
    } else {
      delete html.dataset.theme;
    }
    const dark = effectiveTheme() === "dark";
    const toggle = $("#theme-toggle");
    toggle.textContent = dark ? "Light theme" : "Dark theme";
    toggle.setAttribute("aria-pressed", String(dark));
    rebuildCharts();
  }

  $("#theme-toggle").addEventListener("click", () => {
    const next = effectiveTheme() === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(THEME_STORE, next);
    } catch {
      /* private mode: the choice lasts for this page only */
    }
    applyTheme(next);
  });

  darkQuery.addEventListener("change", () => applyTheme(html.dataset.theme));
  printQuery.addEventListener("change", rebuildCharts); // paper colours and width
  window.addEventListener("beforeprint", rebuildCharts);
  window.addEventListener("afterprint", rebuildCharts);

  // ---------------------------------------------------------------- filters

  function onFilter(name, parse) {
    return (event) => {
      state[name] = parse(event.target.value);
      writeUrl();
      refresh();
    };
  }

  $("#f-tenant").addEventListener("change", onFilter("tenant", String));
  $("#f-route").addEventListener("change", onFilter("route", String));
  $("#f-model").addEventListener("change", onFilter("model", String));
  $("#f-range").addEventListener("change", onFilter("minutes", Number));
  $("#f-top").addEventListener("change", onFilter("top", String));

  // ---------------------------------------------------------------- start

  readUrl();
  fillSelect($("#f-tenant"), [], "All tenants", state.tenant);
  fillSelect($("#f-route"), [], "All routes", state.route);
  fillSelect($("#f-model"), [], "All models", state.model);
  $("#f-range").value = String(state.minutes);
  $("#f-top").value = state.top;
  let savedTheme = null;
  try {
    savedTheme = localStorage.getItem(THEME_STORE);
  } catch {
    savedTheme = null;
  }
  applyTheme(savedTheme);
  refresh();
})();
