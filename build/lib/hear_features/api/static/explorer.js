// hear-features explorer: query by upload, recording or clip id; hear and see the
// neighbours; a canvas map of every stored embedding. Plain browser JavaScript, no build
// step, nothing loaded from elsewhere. Talks only to this server's documented API.
"use strict";

const KEY_STORAGE = "hear-features.api-key";
const FILTERS = ["label", "subject_id", "dataset", "device"];
const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
  "#b07aa1", "#ff9da7", "#9c755f", "#2f4b7c", "#a05195", "#3f8f8f",
];
const OTHER = "#bdbdbd";
const MISSING = "#dcdcdc";
const PAGE = 200000;
const NEAREST_FOR_PLACEMENT = 5;

// Timings (ms since navigation start) for the benchmark and the tests.
const timings = (window.explorerTimings = { mapDrawn: null, searches: [] });

const $ = (sel) => document.querySelector(sel);
const state = {
  map: null,        // {method, generation, ids[], index Map, x Float32Array, y, colours Uint32Array}
  colourBy: "label",
  view: { scale: 1, dx: 0, dy: 0 },
  rows: [],         // the result table, as plain objects (what CSV export writes)
  aggregation: "window",
  lastQuery: null,  // {kind: "audio", file} | {kind: "clip", clipId}
  queryPoints: [],  // [{x, y, label}] query windows on the map
  resultIds: new Set(),
  selected: null,   // clip id picked on the map
  objectUrls: [],
  mapRequest: 0,
  seen: null,       // Set of the metadata columns this key may see (null: not known yet)
};

class AuthError extends Error {}

// ---- API access: the key travels in a header, never in a URL ---------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    showKeyPrompt(key ? "That key was refused." : null);
    throw new AuthError("API key required");
  }
  if (!response.ok && response.status !== 202) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error.message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function blobUrl(path) {
  const response = await api(path);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  return url;
}

function showKeyPrompt(error) {
  $("#app").hidden = true;
  $("#key-prompt").hidden = false;
  $("#forget-key").hidden = true;
  $("#store-status").textContent = "API key required";
  const err = $("#key-error");
  err.hidden = !error;
  err.textContent = error || "";
  $("#key-input").focus();
}

function say(text, isError = false) {
  const el = $("#message");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

function report(error) {
  if (error instanceof AuthError) return;
  console.error(error);
  say(error.message || String(error), true);
}

// ---- start-up -----------------------------------------------------------------------

async function start() {
  let info;
  try {
    info = await (await api("/v1/map/info")).json();
  } catch (error) {
    if (!(error instanceof AuthError)) {
      $("#store-status").textContent = `cannot reach the API: ${error.message}`;
    }
    return;
  }
  $("#key-prompt").hidden = true;
  $("#app").hidden = false;
  $("#forget-key").hidden = !apiKey();
  $("#store-status").textContent = `${info.points.toLocaleString()} stored clips`;
  fillColumnChoices(info.columns);
  if (info.maps.umap === "ready") $("#map-method").value = "umap";
  await loadMap();
}

function fillColumnChoices(columns) {
  const select = $("#colour-by");
  select.innerHTML = "";
  const names = columns.map((c) => c.name).filter((n) => n !== "model_id");
  state.seen = new Set(columns.map((c) => c.name));
  for (const name of names) select.add(new Option(name, name));
  state.colourBy = names.includes("label") ? "label" : names[0] || "";
  select.value = state.colourBy;
  addStudyFilters(columns);
  // Filter only on what this key may see (the server lists only those columns).
  for (const input of document.querySelectorAll("[data-filter]")) {
    const shown = names.includes(input.dataset.filter);
    input.closest("label").hidden = !shown;
    if (!shown) input.value = "";
  }
  const lists = $("#datalists");
  lists.innerHTML = "";
  for (const column of columns) {
    if (!filterable(column.name) || !column.values) continue;
    const list = document.createElement("datalist");
    list.id = `values-${column.name}`;
    for (const value of column.values) list.append(new Option(String(value)));
    lists.append(list);
  }
}

// Columns the store lists that are not built in (a study's own: gender, covid, age ...)
// get a filter input too; the server converts the typed text to the column's type.
const NOT_FILTERS = ["model_id", "audio_uri", "offset_s", "recording_id", "path"];

function filterable(name) {
  return FILTERS.includes(name) || !NOT_FILTERS.includes(name);
}

function addStudyFilters(columns) {
  const box = document.querySelector("fieldset.filters");
  for (const old of box.querySelectorAll("label.study")) old.remove();
  for (const column of columns) {
    if (FILTERS.includes(column.name) || !filterable(column.name)) continue;
    const label = document.createElement("label");
    label.className = "study";
    const input = document.createElement("input");
    input.dataset.filter = column.name;
    input.setAttribute("list", `values-${column.name}`);
    label.append(document.createTextNode(`${column.name} `), input);
    box.append(label);
  }
}

// ---- the map: data ----------------------------------------------------------------------

async function loadMap() {
  const method = $("#map-method").value;
  const column = state.colourBy;
  const request = ++state.mapRequest;
  const status = $("#map-status");
  status.textContent = "loading…";
  const result = await fetchMap(method, column);
  if (request !== state.mapRequest) return;
  if (result.pending) {
    // UMAP is computed in the background: show PCA meanwhile and ask again later.
    if (!state.map || state.map.method !== "pca" || state.map.column.name !== column) {
      const pca = await fetchMap("pca", column);
      if (request !== state.mapRequest) return;
      setMap(pca.pages, column);
    }
    status.textContent = "UMAP is being computed on the server; showing PCA until it is ready";
    setTimeout(() => {
      if (request === state.mapRequest) loadMap().catch(report);
    }, result.pending.retry_after_s * 1000);
    return;
  }
  setMap(result.pages, column);
  status.textContent = `${state.map.ids.length.toLocaleString()} points · ${state.map.method.toUpperCase()}`;
}

// All pages of one map: {pages} or, while the server computes it, {pending}.
async function fetchMap(method, column) {
  const pages = [];
  let offset = 0;
  let total = null;
  while (total === null || offset < total) {
    const params = new URLSearchParams({ method, offset, limit: PAGE });
    if (column) params.set("columns", column);
    const response = await api(`/v1/map?${params}`);
    if (response.status === 202) return { pending: await response.json() };
    const page = await response.json();
    pages.push(page);
    total = page.total;
    offset += page.count;
    if (page.count === 0) break;
  }
  return { pages };
}

function setMap(pages, column) {
  const n = pages.reduce((sum, p) => sum + p.count, 0);
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  const ids = new Array(n);
  let at = 0;
  let values = null;
  let categories = null;
  let kind = null;
  for (const page of pages) {
    x.set(page.x, at);
    y.set(page.y, at);
    for (let i = 0; i < page.count; i++) ids[at + i] = page.clip_ids[i];
    const col = page.columns[column];
    if (col) {
      kind = col.kind;
      if (col.kind === "category") {
        categories = col.categories;
        values = values || new Int32Array(n);
        values.set(col.codes, at);
      } else {
        values = values || new Float64Array(n);
        values.set(col.values.map((v) => (v === null ? NaN : v)), at);
      }
    }
    at += page.count;
  }
  const index = new Map();
  for (let i = 0; i < n; i++) index.set(ids[i], i);
  state.map = {
    method: pages[0] ? pages[0].method : "pca",
    generation: pages[0] ? pages[0].generation : 0,
    ids, index, x, y,
    column: { name: column, kind, categories, values },
  };
  colourPoints();
  buildGrid();
  drawMap();
  if (timings.mapDrawn === null) { // noted once the canvas is painted
    requestAnimationFrame(() => setTimeout(() => {
      if (timings.mapDrawn === null) timings.mapDrawn = performance.now();
    }, 0));
  }
}

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function packed(rgb) { // little-endian ImageData word: ABGR
  return (255 << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0];
}

const GRADIENT = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"].map(hexToRgb);

function gradient(t) {
  const s = Math.max(0, Math.min(1, t)) * (GRADIENT.length - 1);
  const i = Math.min(GRADIENT.length - 2, Math.floor(s));
  const f = s - i;
  return GRADIENT[i].map((c, j) => Math.round(c + (GRADIENT[i + 1][j] - c) * f));
}

function colourPoints() {
  const m = state.map;
  const n = m.ids.length;
  const colours = new Uint32Array(n);
  const legend = $("#legend");
  legend.innerHTML = "";
  const col = m.column;
  if (col.kind === "category") {
    const counts = new Array(col.categories.length).fill(0);
    for (let i = 0; i < n; i++) if (col.values[i] >= 0) counts[col.values[i]]++;
    const order = counts.map((c, i) => i).sort((a, b) => counts[b] - counts[a]);
    const colourOf = new Array(col.categories.length).fill(packed(hexToRgb(OTHER)));
    order.slice(0, PALETTE.length).forEach((cat, rank) => {
      colourOf[cat] = packed(hexToRgb(PALETTE[rank]));
    });
    const missing = packed(hexToRgb(MISSING));
    for (let i = 0; i < n; i++) colours[i] = col.values[i] >= 0 ? colourOf[col.values[i]] : missing;
    order.slice(0, PALETTE.length).forEach((cat, rank) => {
      legend.append(legendItem(PALETTE[rank], `${col.categories[cat] || "(empty)"} (${counts[cat]})`));
    });
    if (order.length > PALETTE.length) {
      const rest = order.slice(PALETTE.length).reduce((s, c) => s + counts[c], 0);
      legend.append(legendItem(OTHER, `${order.length - PALETTE.length} more values (${rest})`));
    }
  } else if (col.kind === "number") {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of col.values) if (!Number.isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const span = hi > lo ? hi - lo : 1;
    const missing = packed(hexToRgb(MISSING));
    for (let i = 0; i < n; i++) {
      const v = col.values[i];
      colours[i] = Number.isNaN(v) ? missing : packed(gradient((v - lo) / span));
    }
    const item = document.createElement("span");
    const bar = document.createElement("span");
    bar.className = "gradient";
    bar.style.background = `linear-gradient(to right, ${GRADIENT.map((c) => `rgb(${c})`).join(",")})`;
    item.append(document.createTextNode(Number.isFinite(lo) ? fmt(lo) : "–"), bar,
      document.createTextNode(Number.isFinite(hi) ? fmt(hi) : "–"));
    legend.append(item);
  } else {
    colours.fill(packed(hexToRgb(PALETTE[0])));
  }
  m.colours = colours;
}

function legendItem(colour, text) {
  const item = document.createElement("span");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = colour;
  item.append(swatch, document.createTextNode(text));
  return item;
}

function fmt(v) {
  return Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toFixed(3);
}

// A uniform grid over the unit square, for finding the point under the mouse.
const GRID = 128;

function buildGrid() {
  const m = state.map;
  const cells = new Map();
  for (let i = 0; i < m.ids.length; i++) {
    const key = cellOf(m.x[i], m.y[i]);
    const list = cells.get(key);
    if (list) list.push(i); else cells.set(key, [i]);
  }
  m.grid = cells;
}

function cellOf(x, y) {
  const cx = Math.min(GRID - 1, Math.max(0, Math.floor(x * GRID)));
  const cy = Math.min(GRID - 1, Math.max(0, Math.floor(y * GRID)));
  return cy * GRID + cx;
}

// ---- the map: drawing ----------------------------------------------------------------

const MARGIN = 12;

function canvasSize() {
  const canvas = $("#map-canvas");
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  return { canvas, w, h, ratio };
}

// Unit-square coordinates -> canvas pixels (y up), through the current zoom and pan.
function toPixel(x, y, w, h) {
  const side = Math.min(w, h) - 2 * MARGIN;
  const ox = (w - side) / 2;
  const oy = (h - side) / 2;
  const v = state.view;
  return [ox + (x * side) * v.scale + v.dx, oy + ((1 - y) * side) * v.scale + v.dy];
}

function toUnit(px, py, w, h) {
  const side = Math.min(w, h) - 2 * MARGIN;
  const ox = (w - side) / 2;
  const oy = (h - side) / 2;
  const v = state.view;
  return [(px - ox - v.dx) / v.scale / side, 1 - (py - oy - v.dy) / v.scale / side];
}

function drawMap() {
  const m = state.map;
  if (!m) return;
  const { canvas, w, h, ratio } = canvasSize();
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const pixels = new Uint32Array(image.data.buffer);
  pixels.fill(0xffffffff);
  const n = m.ids.length;
  const base = n < 2000 ? 4 : n < 30000 ? 2 : 1.5; // fewer points, larger dots
  const size = Math.max(1, Math.round(base * ratio * Math.min(3, Math.sqrt(state.view.scale))));
  const half = Math.floor(size / 2);
  for (let i = 0; i < n; i++) {
    const [px, py] = toPixel(m.x[i], m.y[i], w, h);
    const x0 = Math.round(px) - half;
    const y0 = Math.round(py) - half;
    if (x0 < 0 || y0 < 0 || x0 + size > w || y0 + size > h) continue;
    const c = m.colours[i];
    for (let dy = 0; dy < size; dy++) {
      const row = (y0 + dy) * w + x0;
      for (let dx = 0; dx < size; dx++) pixels[row + dx] = c;
    }
  }
  ctx.putImageData(image, 0, 0);
  // Results as rings, the selection as a thick ring, query windows as diamonds.
  ctx.lineWidth = 1.5 * ratio;
  ctx.strokeStyle = "#111";
  for (const id of state.resultIds) {
    const i = m.index.get(id);
    if (i === undefined) continue;
    const [px, py] = toPixel(m.x[i], m.y[i], w, h);
    ctx.beginPath();
    ctx.arc(px, py, 5 * ratio, 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (state.selected && m.index.has(state.selected)) {
    const i = m.index.get(state.selected);
    const [px, py] = toPixel(m.x[i], m.y[i], w, h);
    ctx.lineWidth = 3 * ratio;
    ctx.strokeStyle = "#1f6feb";
    ctx.beginPath();
    ctx.arc(px, py, 8 * ratio, 0, 2 * Math.PI);
    ctx.stroke();
  }
  for (const q of state.queryPoints) {
    const [px, py] = toPixel(q.x, q.y, w, h);
    const r = 7 * ratio;
    ctx.beginPath();
    ctx.moveTo(px, py - r);
    ctx.lineTo(px + r, py);
    ctx.lineTo(px, py + r);
    ctx.lineTo(px - r, py);
    ctx.closePath();
    ctx.fillStyle = "#e8175d";
    ctx.fill();
    ctx.lineWidth = 1.5 * ratio;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  canvas.dataset.points = String(n);
  canvas.dataset.queryPoints = String(state.queryPoints.length);
}

function pointAt(clientX, clientY) {
  const m = state.map;
  if (!m) return null;
  const { canvas, w, h, ratio } = canvasSize();
  const rect = canvas.getBoundingClientRect();
  const px = (clientX - rect.left) * ratio;
  const py = (clientY - rect.top) * ratio;
  const [ux, uy] = toUnit(px, py, w, h);
  const side = (Math.min(w, h) - 2 * MARGIN) * state.view.scale;
  const reach = Math.ceil(((8 * ratio) / side) * GRID) + 1; // cells within 8 px
  const cx = Math.floor(ux * GRID);
  const cy = Math.floor(uy * GRID);
  let best = null;
  let bestD = (8 * ratio) ** 2;
  for (let gy = cy - reach; gy <= cy + reach; gy++) {
    for (let gx = cx - reach; gx <= cx + reach; gx++) {
      if (gx < 0 || gy < 0 || gx >= GRID || gy >= GRID) continue;
      for (const i of m.grid.get(gy * GRID + gx) || []) {
        const [qx, qy] = toPixel(m.x[i], m.y[i], w, h);
        const d = (qx - px) ** 2 + (qy - py) ** 2;
        if (d <= bestD) { bestD = d; best = i; }
      }
    }
  }
  return best;
}

function describePoint(i) {
  const m = state.map;
  const col = m.column;
  let value = "";
  if (col.kind === "category") value = col.values[i] >= 0 ? col.categories[col.values[i]] : "(none)";
  else if (col.kind === "number") value = Number.isNaN(col.values[i]) ? "(none)" : fmt(col.values[i]);
  return { id: m.ids[i], value };
}

function setUpMapEvents() {
  const canvas = $("#map-canvas");
  const tooltip = $("#map-tooltip");
  let drag = null;
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const { w, h, ratio } = canvasSize();
    const rect = canvas.getBoundingClientRect();
    const px = (event.clientX - rect.left) * ratio;
    const py = (event.clientY - rect.top) * ratio;
    const factor = Math.exp(-event.deltaY * 0.0015);
    const v = state.view;
    const scale = Math.min(200, Math.max(1, v.scale * factor));
    const [ux, uy] = toUnit(px, py, w, h);
    v.scale = scale;
    const [nx, ny] = toPixel(ux, uy, w, h);
    v.dx += px - nx;
    v.dy += py - ny;
    drawMap();
  }, { passive: false });
  canvas.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, moved: false };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (drag) {
      const ratio = window.devicePixelRatio || 1;
      const ddx = event.clientX - drag.x;
      const ddy = event.clientY - drag.y;
      if (Math.abs(ddx) + Math.abs(ddy) > 2) drag.moved = true;
      if (drag.moved) {
        state.view.dx += ddx * ratio;
        state.view.dy += ddy * ratio;
        drag.x = event.clientX;
        drag.y = event.clientY;
        drawMap();
      }
      return;
    }
    const i = pointAt(event.clientX, event.clientY);
    if (i === null) { tooltip.hidden = true; return; }
    const { id, value } = describePoint(i);
    tooltip.textContent = `${id} · ${state.map.column.name}: ${value}`;
    const rect = canvas.getBoundingClientRect();
    tooltip.style.left = `${event.clientX - rect.left + 12}px`;
    tooltip.style.top = `${event.clientY - rect.top + 12}px`;
    tooltip.hidden = false;
  });
  canvas.addEventListener("pointerup", (event) => {
    const wasDrag = drag && drag.moved;
    drag = null;
    if (wasDrag) return;
    const i = pointAt(event.clientX, event.clientY);
    if (i !== null) pickPoint(state.map.ids[i]).catch(report);
  });
  canvas.addEventListener("pointerleave", () => { tooltip.hidden = true; });
  canvas.addEventListener("dblclick", () => {
    state.view = { scale: 1, dx: 0, dy: 0 };
    drawMap();
  });
  window.addEventListener("resize", () => drawMap());
}

// A point picked on the map: show it, play it, search from it.
async function pickPoint(clipId) {
  state.selected = clipId;
  const box = $("#selected");
  box.hidden = false;
  box.innerHTML = "";
  box.dataset.clipId = clipId;
  const title = document.createElement("code");
  title.textContent = clipId;
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.id = "selected-audio";
  box.append(title, audio);
  drawMap();
  const searching = searchClip(clipId);
  try {
    audio.src = await blobUrl(`/v1/clips/${encodeURIComponent(clipId)}/audio`);
    audio.play().catch(() => { /* autoplay may be refused; the controls stay */ });
  } catch (error) {
    const note = document.createElement("span");
    note.className = "error";
    note.textContent = error instanceof AuthError ? "" : `audio: ${error.message}`;
    box.append(note);
  }
  await searching;
}

// ---- queries --------------------------------------------------------------------------

function filterValues() {
  const out = {};
  for (const input of document.querySelectorAll("[data-filter]")) {
    const values = input.value.split(",").map((v) => v.trim()).filter(Boolean);
    if (values.length) out[input.dataset.filter] = values;
  }
  return out;
}

function kValue() {
  const k = parseInt($("#k").value, 10);
  return Number.isFinite(k) && k > 0 ? k : 10;
}

async function searchAudio(file) {
  state.lastQuery = { kind: "audio", file };
  const aggregation = $("#aggregation").value;
  const form = new FormData();
  form.append("file", file, file.name || "upload.wav");
  form.append("k", String(kValue()));
  form.append("windows", $("#windows").value);
  form.append("aggregation", aggregation);
  for (const [name, values] of Object.entries(filterValues())) {
    for (const v of values) form.append(name, v);
  }
  say(`searching with ${file.name || "the recording"}…`);
  const t0 = performance.now();
  const body = await (await api("/v1/search/audio", { method: "POST", body: form })).json();
  const rows = [];
  const placements = [];
  if (body.windows) {
    for (const w of body.windows) {
      w.results.forEach((r, i) => rows.push(resultRow(r, i + 1, w.offset_s)));
      placements.push({ label: `${w.offset_s.toFixed(1)} s`, results: w.results });
    }
  } else {
    body.recordings.forEach((r, i) => rows.push(recordingRow(r, i + 1)));
    placements.push({ label: "query", results: body.recordings.map((r) => ({ clip_id: r.best_clip_id, distance: r.distance })) });
  }
  const windows = body.windows ? body.windows.length : null;
  showResults(rows, body.windows ? "window" : "recording", t0,
    `${file.name || "recording"}${windows !== null ? ` · ${windows} window${windows === 1 ? "" : "s"}` : ""}`,
    () => {
      state.queryPoints = placements.map((p) => placeQuery(p.results, p.label)).filter(Boolean);
      state.selected = null;
      drawMap();
    });
}

async function searchClip(clipId) {
  state.lastQuery = { kind: "clip", clipId };
  const k = kValue();
  say(`searching from ${clipId}…`);
  const t0 = performance.now();
  // The server searches from the stored vector: the page never needs the embedding
  // (a key may not be allowed to see embeddings).
  const params = new URLSearchParams({ k: String(k) });
  for (const [name, values] of Object.entries(filterValues())) {
    for (const value of values) params.append(name, value);
  }
  const path = `/v1/clips/${encodeURIComponent(clipId)}`;
  const [body, query] = await Promise.all(
    [api(`${path}/similar?${params}`), api(path)].map(async (r) => (await r).json()));
  const queryOffset = query.offset_s ?? 0;
  const hits = body.results.filter((r) => r.clip_id !== clipId).slice(0, k);
  let rows;
  let kind = "window";
  if ($("#aggregation").value === "recording") {
    kind = "recording";
    const best = new Map();
    for (const h of hits) {
      const rec = h.recording_id || h.clip_id;
      if (!best.has(rec)) best.set(rec, h); // hits come nearest first
    }
    rows = [...best.values()].map((h, i) => recordingRow({
      recording_id: h.recording_id || h.clip_id, best_clip_id: h.clip_id, distance: h.distance,
      score: h.score, query_offset_s: queryOffset, label: h.label, subject_id: h.subject_id,
      dataset: h.dataset, device: h.device,
    }, i + 1));
  } else {
    rows = hits.map((h, i) => resultRow(h, i + 1, queryOffset));
  }
  showResults(rows, kind, t0, `clip ${clipId}`, () => {
    const i = state.map ? state.map.index.get(clipId) : undefined;
    state.queryPoints = i === undefined ? [placeQuery(hits, "query")].filter(Boolean)
      : [{ x: state.map.x[i], y: state.map.y[i], label: clipId }];
    drawMap();
  });
}

// Where a query window goes on the map: the distance-weighted mean of its nearest stored
// clips that are on the map (a projection cannot place a new vector exactly, UMAP least).
function placeQuery(results, label) {
  const m = state.map;
  if (!m) return null;
  let sx = 0, sy = 0, sw = 0, used = 0;
  for (const r of results) {
    const i = m.index.get(r.clip_id);
    if (i === undefined) continue;
    const weight = 1 / Math.max(1e-3, r.distance);
    sx += weight * m.x[i];
    sy += weight * m.y[i];
    sw += weight;
    if (++used >= NEAREST_FOR_PLACEMENT) break;
  }
  return sw > 0 ? { x: sx / sw, y: sy / sw, label } : null;
}

function resultRow(r, rank, windowOffset) {
  return {
    window_s: windowOffset, rank, clip_id: r.clip_id, recording_id: r.recording_id ?? "",
    offset_s: r.offset_s ?? "", distance: r.distance, score: r.score,
    label: r.label ?? "", subject_id: r.subject_id ?? "", dataset: r.dataset ?? "",
    device: r.device ?? "",
  };
}

function recordingRow(r, rank) {
  return {
    rank, recording_id: r.recording_id, clip_id: r.best_clip_id, window_s: r.query_offset_s,
    distance: r.distance, score: r.score, label: r.label ?? "",
    subject_id: r.subject_id ?? "", dataset: r.dataset ?? "", device: r.device ?? "",
  };
}

const COLUMNS = {
  window: ["window_s", "rank", "distance", "label", "subject_id", "dataset", "device", "clip_id"],
  recording: ["rank", "distance", "recording_id", "label", "subject_id", "dataset", "device", "window_s", "clip_id"],
};

// Columns a key may not see are left out of the table and the CSV, not shown empty.
function visible(columns) {
  return columns.filter((c) => !FILTERS.includes(c) || !state.seen || state.seen.has(c));
}
const HEADINGS = {
  window_s: "query window (s)", rank: "rank", distance: "distance", label: "label",
  subject_id: "subject", dataset: "dataset", device: "device", clip_id: "clip",
  recording_id: "recording",
};

// Fill the table; once it is painted, note the time and run ``then`` (map markers,
// spectrograms): the first results do not wait for them.
function showResults(rows, kind, t0, what, then) {
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
  state.rows = rows;
  state.aggregation = kind;
  state.resultIds = new Set(rows.map((r) => r.clip_id));
  const table = $("#results");
  const head = table.tHead;
  const body = table.tBodies[0];
  const columns = visible(COLUMNS[kind]);
  head.innerHTML = "";
  body.innerHTML = "";
  const hr = head.insertRow();
  for (const c of columns) hr.append(th(HEADINGS[c]));
  hr.append(th("spectrogram"), th("listen"), th(""));
  const fragment = document.createDocumentFragment();
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.dataset.clipId = row.clip_id;
    for (const c of columns) {
      const td = document.createElement("td");
      const v = row[c];
      if (c === "distance") { td.textContent = v.toFixed(4); td.className = "num"; }
      else if (c === "window_s") { td.textContent = Number(v).toFixed(1); td.className = "num"; }
      else if (c === "clip_id" || c === "recording_id") {
        const code = document.createElement("code");
        code.textContent = v;
        td.append(code);
      } else td.textContent = v;
      tr.append(td);
    }
    const spec = document.createElement("td");
    const img = document.createElement("img");
    img.className = "spectrogram";
    img.alt = `spectrogram of ${row.clip_id}`;
    spec.append(img);
    const listen = document.createElement("td");
    const play = document.createElement("button");
    play.type = "button";
    play.className = "play";
    play.textContent = "▶";
    play.title = "play this 2 s window";
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    listen.append(play, audio);
    play.addEventListener("click", () => playRow(play, audio, row.clip_id).catch(report));
    const actions = document.createElement("td");
    const from = document.createElement("button");
    from.type = "button";
    from.className = "search-from";
    from.textContent = "search from here";
    from.addEventListener("click", () => searchClip(row.clip_id).catch(report));
    actions.append(from);
    tr.append(spec, listen, actions);
    fragment.append(tr);
  }
  body.append(fragment);
  table.dataset.count = String(rows.length);
  table.dataset.kind = kind;
  $("#export-csv").disabled = rows.length === 0;
  // "Shown" means painted: a task queued from the next animation frame runs after that
  // frame's paint.
  requestAnimationFrame(() => setTimeout(() => {
    const ms = performance.now() - t0;
    timings.searches.push(ms);
    $("#results-summary").textContent = `${what} · ${rows.length} rows · ${Math.round(ms)} ms`;
    say(rows.length ? "" : "no results (try fewer filters)");
    then();
    loadSpectrograms(body);
  }, 0));
}

function th(text) {
  const el = document.createElement("th");
  el.textContent = text;
  return el;
}

async function loadSpectrograms(body) {
  const rows = [...body.rows];
  const next = async () => {
    while (rows.length) {
      const tr = rows.shift();
      const img = tr.querySelector("img.spectrogram");
      try {
        img.src = await blobUrl(`/v1/clips/${encodeURIComponent(tr.dataset.clipId)}/spectrogram.png`);
      } catch (error) {
        img.alt = error instanceof AuthError ? "" : `no spectrogram: ${error.message}`;
        img.title = img.alt;
      }
    }
  };
  await Promise.all([next(), next(), next(), next()]);
}

async function playRow(button, audio, clipId) {
  for (const other of document.querySelectorAll("#results audio")) if (other !== audio) other.pause();
  if (!audio.src) {
    button.disabled = true;
    try {
      audio.src = await blobUrl(`/v1/clips/${encodeURIComponent(clipId)}/audio`);
    } finally {
      button.disabled = false;
    }
  }
  audio.currentTime = 0;
  await audio.play().catch(() => { /* the controls let the user start it */ });
}

// ---- CSV export -----------------------------------------------------------------------

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportCsv() {
  const columns = visible(state.aggregation === "recording"
    ? ["rank", "recording_id", "clip_id", "window_s", "distance", "score", "label", "subject_id", "dataset", "device"]
    : ["window_s", "rank", "clip_id", "recording_id", "offset_s", "distance", "score", "label", "subject_id", "dataset", "device"]);
  const lines = [columns.join(",")];
  for (const row of state.rows) lines.push(columns.map((c) => csvCell(row[c])).join(","));
  const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "hear-features-results.csv";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- microphone: the MediaRecorder take is uploaded as it is (WebM/Opus in Chromium) --------

let recorder = null;
const RECORDING_ENDINGS = [["webm", "webm"], ["ogg", "ogg"], ["mp4", "m4a"], ["wav", "wav"]];

async function toggleRecording() {
  const button = $("#record");
  if (recorder) { recorder.stop(); return; }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (e) => chunks.push(e.data));
  recorder.addEventListener("stop", async () => {
    stream.getTracks().forEach((t) => t.stop());
    const type = (recorder && recorder.mimeType) || (chunks[0] && chunks[0].type) || "audio/webm";
    recorder = null;
    button.classList.remove("recording");
    button.textContent = "● Record";
    const ending = (RECORDING_ENDINGS.find(([key]) => type.includes(key)) || ["", "webm"])[1];
    try {
      await searchAudio(new File(chunks, `recording.${ending}`, { type }));
    } catch (error) { report(error); }
  });
  recorder.start();
  button.classList.add("recording");
  button.textContent = "■ Stop";
  say("recording… press stop when done");
}

// ---- wiring ---------------------------------------------------------------------------

function wire() {
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#key-input").value.trim());
    $("#key-input").value = "";
    start().catch(report);
  });
  $("#forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    location.reload();
  });
  $("#file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) searchAudio(file).catch(report);
    event.target.value = "";
  });
  $("#record").addEventListener("click", () => toggleRecording().catch(report));
  $("#clip-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#clip-input").value.trim();
    if (id) searchClip(id).catch(report);
  });
  $("#aggregation").addEventListener("change", () => {
    const q = state.lastQuery;
    if (!q) return;
    (q.kind === "audio" ? searchAudio(q.file) : searchClip(q.clipId)).catch(report);
  });
  $("#export-csv").addEventListener("click", exportCsv);
  $("#map-method").addEventListener("change", () => loadMap().catch(report));
  $("#colour-by").addEventListener("change", (event) => {
    state.colourBy = event.target.value;
    loadMap().catch(report);
  });
  setUpMapEvents();
}

wire();
start().catch(report);
