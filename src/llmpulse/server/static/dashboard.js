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
  const RANGES = {
    15: "last 15 minutes",
    60: "last hour",
    360: "last 6 hours",
    1440: "last 24 hours",
    10080: "last 7 days",
    43200: "last 30 days",
  };
  const MAX_RANGE_MS = 400 * 86400 * 1000; // the server's longest range
  const CHART_HEIGHT = 220;
  const STEP_NAMES = { 60: "minute", 3600: "hour", 86400: "day" };
  // the spenders panel's groupings: /v1/costs' group_by → the key column's heading
  const SPENDERS = { user_id: "User", org_id: "Organisation", feature: "Feature", environment: "Environment", route: "Route" };
  // filters a spender row sets on the calls table (a route row sets the page's Route filter instead)
  const ATTRS = ["user_id", "org_id", "feature", "environment"];
  const SPENDERS_LIMIT = 10;
  const CALLS_PAGE = 25;

  const $ = (selector) => document.querySelector(selector);
  const html = document.documentElement;

  const state = {
    tenant: "",
    route: "",
    model: "",
    minutes: 60, // a preset range; 0 with a custom one
    from: "", // a custom range: datetime-local values, read as the browser's local time
    to: "",
    top: "cost",
    spenders: "user_id",
    order: "time",
    attrs: {}, // user_id, org_id, feature, environment → value: filters of the calls table
  };
  // the calls table's pages: the cursor of each page shown so far (null: the first page)
  let cursors = [null];
  let callsShown = []; // the records of the page on screen (for the CSV)
  let callsRendered = "";
  const expanded = new Set(); // request ids whose whole record is shown
  let keyTenant = ""; // with an API key: the key's tenant (from /v1/metrics/dimensions)
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
  const dateTime = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const dateTimeSeconds = new Intl.DateTimeFormat(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  const dayFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });

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
    const range = q.get("range");
    if (range === "custom" && validLocal(q.get("from")) && validLocal(q.get("to"))) {
      state.minutes = 0;
      state.from = q.get("from");
      state.to = q.get("to");
    } else {
      const minutes = Number(range);
      state.minutes = minutes in RANGES ? minutes : 60;
    }
    const top = q.get("top");
    state.top = ["cost", "p95_latency", "requests", "errors"].includes(top) ? top : "cost";
    const spenders = q.get("spenders");
    state.spenders = spenders in SPENDERS ? spenders : "user_id";
    state.order = q.get("order") === "cost" ? "cost" : "time";
    state.attrs = {};
    for (const name of ATTRS) if (q.get(name)) state.attrs[name] = q.get(name);
  }

  function writeUrl() {
    const q = new URLSearchParams();
    if (state.tenant) q.set("tenant", state.tenant);
    if (state.route) q.set("route", state.route);
    if (state.model) q.set("model", state.model);
    if (!state.minutes) {
      q.set("range", "custom");
      q.set("from", state.from);
      q.set("to", state.to);
    } else if (state.minutes !== 60) {
      q.set("range", String(state.minutes));
    }
    if (state.top !== "cost") q.set("top", state.top);
    if (state.spenders !== "user_id") q.set("spenders", state.spenders);
    if (state.order !== "time") q.set("order", state.order);
    for (const name of ATTRS) if (state.attrs[name]) q.set(name, state.attrs[name]);
    const search = q.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
  }

  // a datetime-local value ("2025-11-19T09:30", seconds optional): read as the browser's local time
  function validLocal(value) {
    return typeof value === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(value) && !Number.isNaN(new Date(value).getTime());
  }

  function toLocalInput(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  // a custom range's problem, or "" when it can be asked for
  function customRangeProblem() {
    if (state.minutes) return "";
    if (!validLocal(state.from) || !validLocal(state.to)) return "Pick both a start and an end for the custom range.";
    const span = new Date(state.to) - new Date(state.from);
    if (span <= 0) return "The custom range must end after it starts.";
    if (span > MAX_RANGE_MS) return "The custom range may span at most 400 days.";
    return "";
  }

  // the range of the metrics endpoints: the last N minutes, or a custom from/to
  function rangeParams() {
    if (state.minutes) return { minutes: state.minutes };
    return { from: new Date(state.from).toISOString(), to: new Date(state.to).toISOString() };
  }

  // the range of /v1/calls and /v1/costs, which take only from and to
  function absoluteRange() {
    if (!state.minutes) return rangeParams();
    const to = new Date();
    return { from: new Date(to.getTime() - state.minutes * 60000).toISOString(), to: to.toISOString() };
  }

  function scopeParams(extra) {
    const params = rangeParams();
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
    const problem = customRangeProblem();
    if (problem) {
      $("#load-error").textContent = problem;
      $("#load-error").hidden = false;
      return; // asked again once the range is fixed
    }
    const scope = scopeParams();
    try {
      // spenders and calls need a tenant: the page's, or an API key's (known after the first answer)
      let perTenant = state.tenant || keyTenant ? loadPerTenant() : null;
      perTenant?.catch(() => {}); // a failure is reported through the other answers' failure
      const budgetsLoad = loadBudgets(); // budgets: see the "budgets" section
      budgetsLoad.catch(() => {});
      const alertsLoad = soft(loadAlerts()); // alerts: see the "alerts" section
      alertsLoad.catch(() => {});
      const [dims, series, byModel, byRoute, recent] = await Promise.all([
        api("/v1/metrics/dimensions", { tenant_id: state.tenant, ...rangeParams() }),
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
      keyTenant = state.tenant ? keyTenant : dims.tenant_id || "";
      if (!perTenant && keyTenant) perTenant = loadPerTenant();
      const [spenders, calls] = perTenant ? await perTenant : [null, null];
      const budgets = await budgetsLoad;
      const alerts = await alertsLoad;
      if (gen !== generation) return;
      showDashboard();
      renderFilters(dims);
      renderScope(series);
      renderTotals(series.total);
      renderCharts(series.series, series.step_s);
      renderBreakdown("#by-model", "model", byModel.rows);
      renderBreakdown("#by-route", "route", byRoute.rows);
      renderRecent(recent.calls, recent.unavailable);
      renderAttrFilters();
      renderSpenders(spenders);
      renderCalls(calls);
      renderBudgets(budgets);
      renderAlerts(alerts);
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

  // an answer, or {error} for an error that leaves the rest of the page standing
  function soft(promise) {
    return promise.catch((error) => {
      if (error instanceof AuthError || (error instanceof HttpError && error.status === 403)) throw error;
      return { error: error instanceof Error ? error.message : String(error) };
    });
  }

  // /v1/costs for the spenders panel and /v1/calls for the calls table
  function loadPerTenant() {
    const range = absoluteRange();
    const filters = { route: state.route, model: state.model, ...state.attrs };
    // the panel leaves out the filter on what it groups by, so every group stays in view
    const costFilters = { ...filters, [state.spenders]: "" };
    const cursor = cursors[cursors.length - 1];
    const costs = api("/v1/costs", {
      tenant_id: state.tenant,
      ...range,
      ...costFilters,
      group_by: state.spenders,
      limit: SPENDERS_LIMIT,
    });
    // a cursor holds the range of the first page it follows: later pages keep it
    const callsRange = cursor ? {} : range;
    const calls = api("/v1/calls", {
      tenant_id: state.tenant,
      ...callsRange,
      ...filters,
      order: state.order,
      limit: CALLS_PAGE,
      cursor,
    });
    return Promise.all([soft(costs), soft(calls)]);
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
    const start = new Date(series.from);
    const end = new Date(series.to);
    const long = end - start > 86400000 || start.toDateString() !== new Date().toDateString();
    const format = long ? dateTime : shortTime;
    const span = `${format.format(start)}–${format.format(end)}`;
    const label = state.minutes ? `${RANGES[state.minutes]} (${span})` : span;
    $("#scope").textContent = `${parts.join(" · ")} — ${label}`;
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

  // ---------------------------------------------------------------- spenders and calls

  function renderAttrFilters() {
    const box = $("#attr-filters");
    const names = ATTRS.filter((name) => state.attrs[name]);
    box.hidden = !names.length;
    if (!names.length) {
      box.replaceChildren();
      return;
    }
    const label = document.createElement("span");
    label.textContent = "Spenders and calls of";
    box.replaceChildren(
      label,
      ...names.map((name) => {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.className = "chip";
        chip.dataset.attr = name;
        chip.title = "Remove this filter";
        chip.textContent = `${SPENDERS[name].toLowerCase()} ${state.attrs[name]} ×`;
        chip.addEventListener("click", () => {
          delete state.attrs[name];
          filtersChanged();
        });
        return chip;
      }),
    );
  }

  function showPerTenant(shown) {
    for (const id of ["spenders", "calls"]) {
      $(`#${id}-hint`).hidden = shown;
      $(`#${id}-table`).hidden = !shown;
    }
    $("#calls .pager").hidden = !shown;
    $("#calls-csv").disabled = !shown || !callsShown.length;
  }

  function panelError(id, answer) {
    const error = $(`#${id}-error`);
    const failed = Boolean(answer && answer.error);
    error.hidden = !failed;
    error.textContent = failed ? `Could not load: ${answer.error}` : "";
    return failed;
  }

  function spenderSelected(key) {
    return state.spenders === "route" ? state.route === key : state.attrs[state.spenders] === key;
  }

  function spenderRow(row, other) {
    const tr = document.createElement("tr");
    const named = !other && row.key !== null;
    if (other) {
      tr.className = "other";
      tr.dataset.other = "true";
    } else {
      tr.dataset.key = row.key === null ? "" : row.key;
    }
    tr.dataset.cost = isNum(row.cost_usd) ? String(row.cost_usd) : "";
    tr.dataset.share = isNum(row.cost_share) ? String(row.cost_share) : "";
    tr.dataset.requests = String(row.requests);
    tr.dataset.errors = String(row.errors);
    const keyCell = cell(tr, "", "name key");
    if (named) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "linkish";
      button.textContent = row.key;
      button.title = `Show only the calls of ${SPENDERS[state.spenders].toLowerCase()} ${row.key}`;
      const selected = spenderSelected(row.key);
      button.setAttribute("aria-pressed", String(selected));
      tr.classList.toggle("selected", selected);
      tr.classList.add("clickable");
      keyCell.appendChild(button);
    } else {
      keyCell.textContent = other ? `Other (${fmtCount(row.groups)} more)` : "(none)";
      keyCell.classList.add("muted");
      if (!other) keyCell.title = `calls without a ${SPENDERS[state.spenders].toLowerCase()}`;
    }
    const cost = cell(tr, fmtUsd(row.cost_usd), "num cost");
    if (row.cost_unknown_requests) cost.title = `${fmtCount(row.cost_unknown_requests)} calls of unknown price`;
    const share = cell(tr, "", "share");
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${isNum(row.cost_share) ? Math.max(0, Math.min(1, row.cost_share)) * 100 : 0}%`;
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = fmtPercent(row.cost_share);
    share.append(bar, pct);
    cell(tr, fmtCount(row.requests), "num");
    cell(tr, fmtCount(row.errors), row.errors ? "num has-errors" : "num");
    return tr;
  }

  function renderSpenders(answer) {
    const table = $("#spenders-table");
    $("#spenders-title").textContent = `Top spenders by ${SPENDERS[state.spenders].toLowerCase()}`;
    table.querySelector(".key-col").textContent = SPENDERS[state.spenders];
    showPerTenant(Boolean(answer));
    if (!answer) {
      panelError("spenders", null);
      table.querySelector("tbody").replaceChildren();
      return;
    }
    const body = table.querySelector("tbody");
    if (panelError("spenders", answer)) {
      body.replaceChildren();
      return;
    }
    table.dataset.from = answer.from;
    table.dataset.to = answer.to;
    table.dataset.groupBy = answer.group_by;
    if (!answer.groups.length) {
      const tr = document.createElement("tr");
      cell(tr, "No calls in this range.", "empty").colSpan = 5;
      body.replaceChildren(tr);
      return;
    }
    const rows = answer.groups.map((row) => spenderRow(row, false));
    if (answer.other) rows.push(spenderRow(answer.other, true));
    body.replaceChildren(...rows);
  }

  function pickSpender(key) {
    if (state.spenders === "route") {
      state.route = state.route === key ? "" : key;
    } else if (state.attrs[state.spenders] === key) {
      delete state.attrs[state.spenders];
    } else {
      state.attrs[state.spenders] = key;
    }
    filtersChanged();
  }

  $("#spenders-table tbody").addEventListener("click", (event) => {
    const tr = event.target.closest("tr.clickable");
    if (tr) pickSpender(tr.dataset.key);
  });

  const callTime = (iso) => (state.minutes && state.minutes <= 1440 ? timeFormat : dateTimeSeconds).format(new Date(iso));

  function callRows(call, index) {
    const tr = document.createElement("tr");
    tr.className = "call";
    tr.dataset.requestId = call.request_id;
    const detailId = `call-detail-${index}`;
    const open = expanded.has(call.request_id);
    const toggleCell = cell(tr, "", "toggle");
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "expand";
    toggle.textContent = open ? "▾" : "▸";
    toggle.setAttribute("aria-expanded", String(open));
    toggle.setAttribute("aria-controls", detailId);
    toggle.setAttribute("aria-label", `Whole record of ${call.request_id}`);
    toggleCell.appendChild(toggle);
    cell(tr, callTime(call.started_at), "", call.started_at);
    const user = call.user_id || call.user_id_hash || "";
    cell(tr, user, "name", user);
    cell(tr, call.org_id || "", "name", call.org_id || "");
    cell(tr, call.feature || "", "name", call.feature || "");
    cell(tr, call.environment || "", "name", call.environment || "");
    cell(tr, call.route, "name", call.route);
    cell(tr, call.model, "name", call.model);
    const status = cell(tr, "");
    const pill = document.createElement("span");
    pill.className = `status status-${call.status}`;
    pill.textContent = call.status;
    if (call.error_message || call.error_type) pill.title = call.error_message || call.error_type;
    status.appendChild(pill);
    cell(tr, fmtMs(call.latency_ms), "num");
    cell(tr, `${fmtCount(call.input_tokens)} / ${fmtCount(call.output_tokens)}`, "num");
    const cost = cell(tr, fmtUsd(call.cost_usd), "num cost", call.cost_source || "unknown price");
    cost.dataset.value = isNum(call.cost_usd) ? String(call.cost_usd) : "";
    const detail = document.createElement("tr");
    detail.className = "detail";
    detail.id = detailId;
    detail.hidden = !open;
    const td = cell(detail, "");
    td.colSpan = 12;
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(call, null, 2);
    td.appendChild(pre);
    return [tr, detail];
  }

  function renderCalls(answer) {
    const body = $("#calls-table tbody");
    $("#calls-order-time").setAttribute("aria-pressed", String(state.order === "time"));
    $("#calls-order-cost").setAttribute("aria-pressed", String(state.order === "cost"));
    $("#calls-page").textContent = `Page ${cursors.length}`;
    if (!answer || panelError("calls", answer)) {
      if (!answer) panelError("calls", null);
      callsShown = [];
      callsRendered = "";
      body.replaceChildren();
      $("#calls-prev").disabled = cursors.length < 2;
      $("#calls-next").disabled = true;
      $("#calls-csv").disabled = true;
      return;
    }
    const table = $("#calls-table");
    table.dataset.from = answer.from;
    table.dataset.to = answer.to;
    table.dataset.nextCursor = answer.next_cursor || "";
    $("#calls-prev").disabled = cursors.length < 2;
    $("#calls-next").disabled = !answer.next_cursor;
    callsShown = answer.calls;
    $("#calls-csv").disabled = !callsShown.length;
    // unchanged since the last poll: leave the rows (and what is expanded) alone
    const rendered = JSON.stringify([answer.calls, state.minutes ? 1 : 0]);
    if (rendered === callsRendered) return;
    callsRendered = rendered;
    if (!answer.calls.length) {
      const tr = document.createElement("tr");
      cell(tr, "No calls in this range.", "empty").colSpan = 12;
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...answer.calls.flatMap(callRows));
  }

  $("#calls-table tbody").addEventListener("click", (event) => {
    const toggle = event.target.closest("button.expand");
    if (!toggle) return;
    const tr = toggle.closest("tr");
    const detail = document.getElementById(toggle.getAttribute("aria-controls"));
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "▾" : "▸";
    detail.hidden = !open;
    if (open) expanded.add(tr.dataset.requestId);
    else expanded.delete(tr.dataset.requestId);
  });

  function setOrder(order) {
    if (state.order === order) return;
    state.order = order;
    filtersChanged();
  }

  $("#calls-order-time").addEventListener("click", () => setOrder("time"));
  $("#calls-order-cost").addEventListener("click", () => setOrder("cost"));

  $("#calls-next").addEventListener("click", () => {
    const next = $("#calls-table").dataset.nextCursor;
    if (!next) return;
    cursors.push(next);
    callsRendered = "";
    refresh();
  });

  $("#calls-prev").addEventListener("click", () => {
    if (cursors.length < 2) return;
    cursors.pop();
    callsRendered = "";
    refresh();
  });

  // ---------------------------------------------------------------- CSV of the calls on screen

  function csvField(value) {
    if (value === null || value === undefined) return "";
    let text = typeof value === "object" ? JSON.stringify(value) : String(value);
    // a spreadsheet would run a text starting with one of these as a formula
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  }

  function callsCsv(calls) {
    const fields = [];
    for (const call of calls) for (const name of Object.keys(call)) if (!fields.includes(name)) fields.push(name);
    const lines = [fields.join(",")];
    for (const call of calls) lines.push(fields.map((name) => csvField(call[name])).join(","));
    return `${lines.join("\r\n")}\r\n`;
  }

  $("#calls-csv").addEventListener("click", () => {
    if (!callsShown.length) return;
    const blob = new Blob([callsCsv(callsShown)], { type: "text/csv;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    const tenant = state.tenant || keyTenant || "calls";
    link.download = `llmpulse-calls-${tenant}-${state.order}-page${cursors.length}.csv`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  });

  // ---------------------------------------------------------------- budgets (GET /v1/budgets)
  //
  // The shared budgets of the tenant in view (the page's tenant, or the API key's; every budget with
  // "All tenants"), each with its current period's ledger as the server answers it: a bar of what is
  // committed and reserved against the amount, what remains, the spend the call records observed
  // beside the ledger's committed, the burn rate and the server's projected exhaustion. Everything
  // shown is the server's figure; the page computes only the bar's widths.

  const exhaustFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
  const PERIOD_NAMES = { day: "Day", week: "Week", month: "Month", total: "Total" };
  const SCOPE_NAMES = { user_id: "user", org_id: "org", feature: "feature", environment: "environment" };

  // /v1/budgets, or {error} when it fails (the rest of the page still shows)
  function loadBudgets() {
    return soft(api("/v1/budgets"));
  }

  function budgetScope(budget, withTenant) {
    const scope = budget.scope || {};
    const parts = withTenant ? [`tenant ${scope.tenant_id}`] : [];
    for (const [name, label] of Object.entries(SCOPE_NAMES)) if (scope[name]) parts.push(`${label} ${scope[name]}`);
    return parts.length ? parts.join(" · ") : "the whole tenant";
  }

  // when the budget runs out at its burn rate, as text
  function exhaustionText(budget) {
    if (isNum(budget.remaining_usd) && budget.remaining_usd <= 0) return "exhausted";
    if (!budget.projected_exhaustion_at) return budget.period === "total" ? "not at this rate" : "not this period";
    return exhaustFormat.format(new Date(budget.projected_exhaustion_at));
  }

  const share = (part, whole) => (isNum(part) && isNum(whole) && whole > 0 ? Math.max(0, part / whole) : 0);

  function budgetRow(budget, withTenant) {
    const tr = document.createElement("tr");
    tr.dataset.id = budget.id;
    for (const name of ["amount_usd", "committed_usd", "reserved_usd", "remaining_usd", "observed_usd", "burn_usd_per_hour"]) {
      tr.dataset[name.replace(/_(\w)/g, (_, c) => c.toUpperCase())] = isNum(budget[name]) ? String(budget[name]) : "";
    }
    tr.dataset.exhaustion = budget.projected_exhaustion_at || "";
    tr.dataset.hard = String(Boolean(budget.hard));
    tr.dataset.period = budget.period;

    const name = cell(tr, "", "name b-id");
    const id = document.createElement("strong");
    id.textContent = budget.id;
    const scope = document.createElement("span");
    scope.className = "sub b-scope";
    scope.textContent = budgetScope(budget, withTenant);
    name.append(id, scope);

    const period = cell(tr, "", "b-period");
    const periodName = document.createElement("span");
    periodName.textContent = budget.period === "total" ? "Total" : `${PERIOD_NAMES[budget.period] || budget.period} · ${budget.timezone}`;
    period.appendChild(periodName);
    if (budget.period_end) {
      const until = document.createElement("span");
      until.className = "sub";
      until.textContent = `until ${exhaustFormat.format(new Date(budget.period_end))}`;
      period.appendChild(until);
    }

    const mode = cell(tr, "", "b-mode");
    const pill = document.createElement("span");
    pill.className = `status ${budget.hard ? "status-hard" : "status-soft"}`;
    pill.textContent = budget.hard ? "hard" : "soft";
    pill.title = budget.hard ? "refuses reservations that do not fit" : "records reservations past the amount";
    mode.appendChild(pill);

    const burn = cell(tr, "", "b-burn");
    const used = share((budget.committed_usd || 0) + (budget.reserved_usd || 0), budget.amount_usd);
    const bar = document.createElement("span");
    bar.className = "bar budget-bar";
    bar.classList.toggle("over", used >= 1);
    const committed = document.createElement("span");
    committed.className = "committed";
    const committedShare = Math.min(1, share(budget.committed_usd, budget.amount_usd));
    committed.style.width = `${committedShare * 100}%`;
    const reserved = document.createElement("span");
    reserved.className = "reserved";
    reserved.style.width = `${Math.min(1 - committedShare, share(budget.reserved_usd, budget.amount_usd)) * 100}%`;
    bar.append(committed, reserved);
    const text = document.createElement("span");
    text.className = "sub b-burn-text";
    text.textContent = `${fmtUsd(budget.committed_usd)} + ${fmtUsd(budget.reserved_usd)} reserved of ${fmtUsd(budget.amount_usd)} (${fmtPercent(used)})`;
    burn.append(bar, text);

    cell(tr, fmtUsd(budget.remaining_usd), "num b-remaining");
    const ledger = cell(tr, fmtUsd(budget.committed_usd), "num b-committed");
    if (budget.overrun_usd > 0) ledger.title = `${fmtUsd(budget.overrun_usd)} over the estimates`;
    const observed = cell(tr, "", "num b-observed");
    const observedValue = document.createElement("span");
    observedValue.textContent = fmtUsd(budget.observed_usd);
    const calls = document.createElement("span");
    calls.className = "sub";
    calls.textContent = `${fmtCount(budget.observed_requests)} calls`;
    observed.append(observedValue, calls);
    cell(tr, `${fmtUsd(budget.burn_usd_per_hour)}/h`, "num b-rate");
    const runsOut = cell(tr, exhaustionText(budget), "b-exhaustion", budget.projected_exhaustion_at || "");
    runsOut.classList.toggle("soon", Boolean(budget.projected_exhaustion_at) || budget.remaining_usd <= 0);
    return tr;
  }

  function renderBudgets(answer) {
    const table = $("#budgets-table");
    const empty = $("#budgets-empty");
    const error = $("#budgets-error");
    const failed = Boolean(answer && answer.error);
    error.hidden = !failed;
    error.textContent = failed ? `Could not load the budgets: ${answer.error}` : "";
    const tenant = state.tenant || keyTenant;
    const budgets = failed || !answer ? [] : answer.budgets.filter((b) => !tenant || (b.scope && b.scope.tenant_id === tenant));
    table.dataset.tenant = tenant;
    table.hidden = failed || !budgets.length;
    empty.hidden = failed || Boolean(budgets.length);
    empty.textContent = `No budgets${tenant ? ` for tenant ${tenant}` : ""}. Create one with \`llmpulse budgets set\` or PUT /v1/budgets/{id}.`;
    table.querySelector("tbody").replaceChildren(...budgets.map((b) => budgetRow(b, !tenant)));
  }

  // ---------------------------------------------------------------- alerts (GET /v1/alerts)
  //
  // What fires for the tenant in view (the page's tenant, or the API key's; every tenant's with "All
  // tenants"), then what is pending, each with the rule's kind, the value and summary of its last
  // evaluation, since when and its labels; then the last transitions (fired, resolved), newest first;
  // and a badge in the header with the count of firing alerts. Everything shown is the server's.
  //
  // Only a server started with a rules file (serve --alerts) has alerts. /health says whether it has
  // (its "alerts" section is null without): the page asks it once at load, and again once a minute
  // while the answer is no, so a server without rules is never asked for /v1/alerts (its 404 would
  // be a failed load in the console at every refresh).

  const ALERTS_HISTORY = 8; // transitions shown
  const ALERTS_PROBE_MS = 60000;
  const ALERT_ORDER = { firing: 0, pending: 1 }; // the statuses listed, in this order
  const KIND_NAMES = { threshold: "threshold", slo: "SLO burn rate", anomaly: "anomaly", runway: "budget runway" };
  const HIDDEN_LABELS = new Set(["alertname", "tenant_id"]); // the rule's name and tenant are shown already
  const valueFormat = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });
  const fmtValue = (v) => (isNum(v) ? valueFormat.format(v) : "–");
  let alertRules = null; // whether the server has a rules file (null: not asked yet)
  let alertsProbedAt = 0;

  async function hasAlertRules() {
    if (alertRules === true) return true;
    if (alertRules === false && Date.now() - alertsProbedAt < ALERTS_PROBE_MS) return false;
    alertsProbedAt = Date.now();
    try {
      const response = await fetch(new URL("/health", location.origin), { headers: { Accept: "application/json" }, cache: "no-store" });
      const body = await response.json();
      alertRules = Boolean(body && body.alerts);
    } catch {
      alertRules = false; // asked again in a minute
    }
    return alertRules;
  }

  // /v1/alerts of the tenant in view; {absent: true} when the server has no rules
  async function loadAlerts() {
    if (!(await hasAlertRules())) return { absent: true };
    try {
      return await api("/v1/alerts", { tenant_id: state.tenant, limit: ALERTS_HISTORY });
    } catch (error) {
      if (!(error instanceof HttpError && error.status === 404)) throw error;
      alertRules = false; // restarted without its rules file
      alertsProbedAt = Date.now();
      return { absent: true };
    }
  }

  function alertTime(iso) {
    return iso ? dateTimeSeconds.format(new Date(iso)) : "–";
  }

  function statusPill(status) {
    const pill = document.createElement("span");
    pill.className = `status status-${status}`;
    pill.textContent = status;
    return pill;
  }

  function ruleCell(row, rule, tenant, withTenant) {
    const td = cell(row, "", "name a-rule");
    const name = document.createElement("strong");
    name.textContent = rule;
    td.appendChild(name);
    if (withTenant) {
      const sub = document.createElement("span");
      sub.className = "sub a-tenant";
      sub.textContent = `tenant ${tenant}`;
      td.appendChild(sub);
    }
    return td;
  }

  function alertRow(alert, withTenant) {
    const tr = document.createElement("tr");
    tr.dataset.rule = alert.rule;
    tr.dataset.tenant = alert.tenant_id;
    tr.dataset.status = alert.status;
    tr.dataset.value = isNum(alert.value) ? String(alert.value) : "";
    tr.dataset.since = alert.since || "";
    tr.dataset.labels = JSON.stringify(alert.labels || {});
    cell(tr, "", "a-status").appendChild(statusPill(alert.status));
    ruleCell(tr, alert.rule, alert.tenant_id, withTenant);
    cell(tr, KIND_NAMES[alert.kind] || alert.kind, "a-kind");
    cell(tr, fmtValue(alert.value), "num a-value");
    cell(tr, alert.summary || "", "a-summary", alert.summary || "");
    cell(tr, alertTime(alert.since), "a-since", alert.since || "");
    const labels = cell(tr, "", "a-labels");
    for (const [name, value] of Object.entries(alert.labels || {})) {
      if (HIDDEN_LABELS.has(name)) continue;
      const chip = document.createElement("span");
      chip.className = `label label-${name}`;
      chip.textContent = `${name}=${value}`;
      labels.appendChild(chip);
    }
    return tr;
  }

  function transitionRow(transition, withTenant) {
    const tr = document.createElement("tr");
    tr.dataset.rule = transition.rule;
    tr.dataset.status = transition.status;
    tr.dataset.at = transition.at;
    tr.dataset.value = isNum(transition.value) ? String(transition.value) : "";
    cell(tr, alertTime(transition.at), "h-at", transition.at);
    ruleCell(tr, transition.rule, transition.tenant_id, withTenant);
    cell(tr, "", "h-status").appendChild(statusPill(transition.status));
    cell(tr, fmtValue(transition.value), "num h-value");
    cell(tr, transition.summary || "", "h-summary", transition.summary || "");
    return tr;
  }

  $("#alerts-badge").addEventListener("click", () => {
    $("#alerts").scrollIntoView({ block: "start" });
    $("#alerts-title").focus({ preventScroll: true });
  });

  function renderAlerts(answer) {
    const panel = $("#alerts");
    const badge = $("#alerts-badge");
    const absent = !answer || Boolean(answer.absent);
    const failed = !absent && Boolean(answer.error);
    const firing = absent || failed ? 0 : answer.firing;
    badge.hidden = !firing;
    badge.dataset.firing = String(firing);
    badge.textContent = `${fmtCount(firing)} firing`;
    badge.title = `${fmtCount(firing)} alert${firing === 1 ? "" : "s"} firing: see the Alerts panel`;
    panel.hidden = absent;
    if (absent) return;
    const error = $("#alerts-error");
    error.hidden = !failed;
    error.textContent = failed ? `Could not load the alerts: ${answer.error}` : "";
    const tenant = state.tenant || keyTenant;
    const alerts = failed ? [] : answer.alerts;
    const shown = alerts.filter((a) => a.status in ALERT_ORDER).sort((a, b) => ALERT_ORDER[a.status] - ALERT_ORDER[b.status]);
    const history = failed ? [] : answer.history.slice(0, ALERTS_HISTORY);
    const pending = shown.length - firing;
    panel.classList.toggle("firing", firing > 0);
    panel.dataset.tenant = tenant;
    const rules = `${fmtCount(alerts.length)} rule${alerts.length === 1 ? "" : "s"}`;
    $("#alerts-counts").textContent = failed ? "" : `${fmtCount(firing)} firing · ${fmtCount(pending)} pending · ${rules}`;
    const table = $("#alerts-table");
    table.hidden = !shown.length;
    table.querySelector("tbody").replaceChildren(...shown.map((a) => alertRow(a, !tenant)));
    const empty = $("#alerts-empty");
    empty.hidden = failed || Boolean(shown.length);
    const forTenant = tenant ? ` for tenant ${tenant}` : "";
    empty.textContent = alerts.length ? `Nothing firing or pending${forTenant} (${rules}).` : `No alert rules${forTenant}.`;
    const past = $("#alerts-history");
    past.hidden = !history.length;
    past.querySelector("tbody").replaceChildren(...history.map((h) => transitionRow(h, !tenant)));
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

  let stepS = 60;
  function xValue(v) {
    if (!isNum(v)) return "–";
    const date = new Date(v * 1000);
    if (stepS >= 86400) return dayFormat.format(date);
    const rangeS = lastSeries ? lastSeries.window_start.length * stepS : 0;
    return stepS >= 3600 || rangeS > 86400 ? dateTime.format(date) : shortTime.format(date);
  }

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
        { value: (u, v) => xValue(v) },
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

  function renderCharts(series, step) {
    lastSeries = series;
    if (step) stepS = step;
    for (const span of document.querySelectorAll(".charts .step")) span.textContent = STEP_NAMES[stepS] || `${stepS} s`;
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

  // the calls table starts again at its first page with new filters
  function filtersChanged() {
    cursors = [null];
    callsRendered = "";
    writeUrl();
    refresh();
  }

  function onFilter(name, parse) {
    return (event) => {
      state[name] = parse(event.target.value);
      filtersChanged();
    };
  }

  function showCustomRange() {
    for (const field of document.querySelectorAll(".custom-range")) field.hidden = Boolean(state.minutes);
    $("#f-from").value = state.from;
    $("#f-to").value = state.to;
  }

  $("#f-tenant").addEventListener("change", (event) => {
    state.tenant = event.target.value;
    state.attrs = {}; // users, orgs … belong to a tenant
    filtersChanged();
  });
  $("#f-route").addEventListener("change", onFilter("route", String));
  $("#f-model").addEventListener("change", onFilter("model", String));
  $("#f-range").addEventListener("change", (event) => {
    if (event.target.value === "custom") {
      if (!validLocal(state.from) || !validLocal(state.to)) {
        // start from the range shown so far
        const to = new Date();
        state.from = toLocalInput(new Date(to.getTime() - (state.minutes || 60) * 60000));
        state.to = toLocalInput(new Date(to.getTime() + 60000));
      }
      state.minutes = 0;
    } else {
      state.minutes = Number(event.target.value);
    }
    showCustomRange();
    filtersChanged();
  });
  for (const name of ["from", "to"]) {
    $(`#f-${name}`).addEventListener("change", (event) => {
      state[name] = event.target.value;
      filtersChanged();
    });
  }
  $("#f-top").addEventListener("change", onFilter("top", String));
  $("#f-spenders").addEventListener("change", onFilter("spenders", String));

  // ---------------------------------------------------------------- start

  readUrl();
  fillSelect($("#f-tenant"), [], "All tenants", state.tenant);
  fillSelect($("#f-route"), [], "All routes", state.route);
  fillSelect($("#f-model"), [], "All models", state.model);
  $("#f-range").value = state.minutes ? String(state.minutes) : "custom";
  showCustomRange();
  $("#f-top").value = state.top;
  $("#f-spenders").value = state.spenders;
  let savedTheme = null;
  try {
    savedTheme = localStorage.getItem(THEME_STORE);
  } catch {
    savedTheme = null;
  }
  applyTheme(savedTheme);
  refresh();
})();
