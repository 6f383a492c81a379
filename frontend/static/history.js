// The model history page: every version's scores as an SVG plot and a table, the gate's
// decisions, and promote/rollback for whoever types the admin token (kept in memory only).

import { ApiError, api } from "./api.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

// Plotted metrics, their labels and colours (distinguishable, >= 3:1 on white).
const SERIES = [
  { key: "f1_macro", label: "F1 macro", colour: "#0b57a4" },
  { key: "f1_micro", label: "F1 micro", colour: "#b3261e" },
  { key: "accuracy", label: "Accuracy", colour: "#1e7a3c" },
  { key: "average_precision_macro", label: "Average precision", colour: "#7a4fb3" },
  { key: "roc_auc_macro", label: "ROC AUC", colour: "#a35a00" },
];
const COLUMNS = ["Version", "Created", "Training rows", ...SERIES.map((s) => s.label)];
const PLOT = { width: 760, height: 300, left: 48, right: 16, top: 12, bottom: 44 };

const ui = {
  status: $("history-status"),
  error: $("history-error"),
  current: $("current"),
  currentVersion: $("current-version"),
  currentStage: $("current-stage"),
  plot: $("plot"),
  legend: $("legend"),
  head: $("versions-head"),
  rows: $("versions"),
  tokenForm: $("token-form"),
  tokenInput: $("admin-token"),
  actions: $("admin-actions"),
  rollback: $("rollback"),
  forget: $("forget-token"),
  adminError: $("admin-error"),
  adminStatus: $("admin-status"),
};

/** The admin token while the page is open; never written to storage. */
let token = null;
let history = { current_version: null, models: [] };

function element(name, text, attributes = {}) {
  const node = document.createElement(name);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function svg(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

function shortTime(iso) {
  const date = iso ? new Date(iso) : null;
  if (!date || Number.isNaN(date.getTime())) return "";
  return date.toISOString().slice(5, 16).replace("T", " ");
}

function score(value) {
  return typeof value === "number" ? value.toFixed(3) : "–";
}

function describe(error) {
  if (!(error instanceof ApiError)) return "Something unexpected went wrong. Try again.";
  if (error.status === 0) return "Cannot reach the tagloop server: check your network connection.";
  if (error.code === "learner_not_configured") return "This UI server has no learner configured.";
  if (error.code === "learner_unavailable") return `The learner cannot be reached right now (${error.message}).`;
  if (error.status === 401) return "The learner refused the admin token.";
  return `The request failed: ${error.message}`;
}

function renderCurrent() {
  const current = history.models.find((m) => m.version === history.current_version);
  ui.current.hidden = !history.current_version;
  ui.currentVersion.textContent = history.current_version ?? "";
  ui.currentStage.textContent = current?.stage ?? "full (no staged rollout recorded)";
}

function renderPlot() {
  const models = history.models;
  const { width, height, left, right, top, bottom } = PLOT;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const x = (index) => left + (models.length === 1 ? plotWidth / 2 : (index * plotWidth) / (models.length - 1));
  const y = (value) => top + (1 - value) * plotHeight;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "plot-title",
  });
  const title = svg("title", { id: "plot-title" });
  title.textContent = `Test-set scores of ${models.length} model versions, oldest first`;
  root.append(title);
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(tick), y2: y(tick) }));
    const label = svg("text", { x: left - 8, y: y(tick) + 4, "text-anchor": "end" });
    label.textContent = tick.toFixed(2);
    root.append(label);
  }
  root.append(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + plotHeight }));
  root.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: top + plotHeight, y2: top + plotHeight }));
  const every = Math.max(1, Math.ceil(models.length / 8));
  models.forEach((model, index) => {
    if (model.version === history.current_version) {
      root.append(svg("line", { class: "current", x1: x(index), x2: x(index), y1: top, y2: top + plotHeight }));
    }
    if (index % every === 0 || index === models.length - 1) {
      // The end labels align inwards so that they stay inside the drawing.
      const anchor =
        models.length === 1 ? "middle" : index === 0 ? "start" : index === models.length - 1 ? "end" : "middle";
      const label = svg("text", { x: x(index), y: height - bottom + 18, "text-anchor": anchor });
      label.textContent = shortTime(model.created_at) || model.version.slice(0, 8);
      root.append(label);
    }
  });
  ui.legend.replaceChildren();
  for (const series of SERIES) {
    const points = models
      .map((model, index) => ({ model, index, value: model.metrics[series.key] }))
      .filter((point) => typeof point.value === "number");
    if (points.length === 0) continue;
    const group = svg("g", { class: "series", "data-metric": series.key });
    group.append(
      svg("polyline", {
        points: points.map((p) => `${x(p.index)},${y(p.value)}`).join(" "),
        fill: "none",
        stroke: series.colour,
        "stroke-width": 2,
      }),
    );
    for (const point of points) {
      const promoted = point.model.decision.promoted === true;
      const dot = svg("circle", {
        cx: x(point.index),
        cy: y(point.value),
        r: 4,
        stroke: series.colour,
        "stroke-width": 2,
        fill: promoted ? series.colour : "#ffffff",
      });
      const tip = svg("title");
      tip.textContent = `${series.label} ${score(point.value)}: ${point.model.version} (${promoted ? "promoted" : "rejected"})`;
      dot.append(tip);
      group.append(dot);
    }
    root.append(group);
    const item = element("li", null);
    const swatch = element("span", null, { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = series.colour;
    item.append(swatch, document.createTextNode(series.label));
    ui.legend.append(item);
  }
  ui.plot.replaceChildren(root);
}

function decisionCell(model) {
  const cell = element("td");
  const promoted = model.decision.promoted;
  const verdict = promoted === true ? "promoted" : promoted === false ? "rejected" : "unknown";
  cell.append(element("span", verdict, { class: `decision-${verdict}` }));
  if (model.decision.reason) cell.append(document.createTextNode(`: ${model.decision.reason}`));
  return cell;
}

function renderTable() {
  const admin = token !== null;
  ui.head.replaceChildren(
    ...[...COLUMNS, "Gate decision", "Stage", ...(admin ? ["Action"] : [])].map((name) =>
      element("th", name, { scope: "col" }),
    ),
  );
  const rows = [...history.models].reverse().map((model) => {
    const isCurrent = model.version === history.current_version;
    const row = element("tr", null, { "data-version": model.version });
    if (isCurrent) row.classList.add("is-current");
    const version = element("th", null, { scope: "row" });
    version.append(element("code", model.version));
    if (isCurrent) version.append(document.createTextNode(" (current)"));
    row.append(
      version,
      element("td", shortTime(model.created_at)),
      element("td", model.training_rows ?? "–", { class: "number" }),
      ...SERIES.map((s) => element("td", score(model.metrics[s.key]), { class: "number" })),
      decisionCell(model),
      element("td", model.stage ?? (isCurrent ? "full" : "–")),
    );
    if (admin) {
      const cell = element("td");
      if (!isCurrent) {
        const button = element("button", "Promote", {
          type: "button",
          "aria-label": `Promote ${model.version}`,
        });
        button.addEventListener("click", () => act(() => api.promote(model.version, token)));
        cell.append(button);
      }
      row.append(cell);
    }
    return row;
  });
  ui.rows.replaceChildren(...rows);
}

function render() {
  renderCurrent();
  renderPlot();
  renderTable();
  ui.actions.hidden = token === null;
  ui.tokenForm.hidden = token !== null;
}

async function load() {
  try {
    history = await api.models();
    ui.error.hidden = true;
    ui.status.textContent = `${history.models.length} versions.`;
  } catch (error) {
    ui.error.textContent = describe(error);
    ui.error.hidden = false;
    ui.status.textContent = "";
  }
  render();
}

async function act(call) {
  ui.adminError.hidden = true;
  ui.adminStatus.textContent = "Working…";
  try {
    const answer = await call();
    ui.adminStatus.textContent = `Version ${answer.current_version} is now current; replicas follow within seconds.`;
  } catch (error) {
    ui.adminStatus.textContent = "";
    ui.adminError.textContent = describe(error);
    ui.adminError.hidden = false;
    if (error instanceof ApiError && error.status === 401) forget();
  }
  await load();
}

function forget() {
  token = null;
  ui.tokenInput.value = "";
  render();
}

ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const typed = ui.tokenInput.value.trim();
  ui.tokenInput.value = "";
  if (!typed) {
    ui.adminError.textContent = "Type the admin token first.";
    ui.adminError.hidden = false;
    return;
  }
  token = typed;
  ui.adminError.hidden = true;
  render();
  ui.rollback.focus();
});
ui.rollback.addEventListener("click", () => act(() => api.rollback(token)));
ui.forget.addEventListener("click", () => {
  forget();
  ui.tokenInput.focus();
});

load();
