// The model panel: which model is serving, since when, how good it is on the
// fixed test set, and a notice when it changes while the page is open.

import { api, describeError } from "./api.js";

const METRIC_LABELS = {
  f1_macro: "F1 (macro)",
  f1_micro: "F1 (micro)",
  f1_weighted: "F1 (weighted)",
  accuracy: "Exact-match accuracy",
  average_precision_macro: "Average precision (macro)",
  roc_auc_macro: "ROC AUC (macro)",
  hamming_loss: "Hamming loss (lower is better)",
  rows: "Test titles",
};

function formatMetric(value) {
  if (value === null || value === undefined) return "n/a";
  return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(3);
}

function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
}

export class ModelPanel {
  /**
   * @param {{versionEl: HTMLElement, loaded: HTMLElement, metrics: HTMLElement,
   *          details: HTMLElement, waiting: HTMLElement, notice: HTMLElement,
   *          noticeText: HTMLElement, error: HTMLElement}} parts
   *   `details` (version, time, metrics) stays hidden until a model is known.
   * @param {number} pollSeconds
   * @param {{onChange: (version: string) => void, onRecover: () => void}} hooks
   *   onChange: the served version differs from the one shown before;
   *   onRecover: the API answers again after a failure.
   */
  constructor(parts, pollSeconds, hooks) {
    Object.assign(this, parts);
    this.pollSeconds = pollSeconds;
    this.hooks = hooks;
    this.version = null;
    this.failing = false;
  }

  start() {
    this.refresh();
    setInterval(() => {
      if (!document.hidden) this.refresh();
    }, this.pollSeconds * 1000);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
  }

  async refresh() {
    let model;
    try {
      model = await api.model();
    } catch (error) {
      this.waiting.hidden = true;
      this.failing = true;
      this.error.textContent = describeError(error, "model");
      this.error.hidden = false;
      return;
    }
    this.error.hidden = true;
    if (this.failing) {
      this.failing = false;
      this.hooks.onRecover();
    }
    const previous = this.version;
    this.version = model.version;
    this.render(model);
    if (previous !== null && previous !== model.version) {
      this.noticeText.textContent =
        `The model changed while this page was open: ${model.version} now serves ` +
        `(was ${previous}). Tags on screen may come from the previous model: ` +
        "choose Predict again to update them.";
      this.notice.hidden = false;
      this.hooks.onChange(model.version);
    }
  }

  render(model) {
    this.waiting.hidden = true;
    this.details.hidden = false;
    this.versionEl.textContent = model.version;
    this.loaded.textContent = formatTime(model.loaded_at);
    this.loaded.dateTime = model.loaded_at;
    const rows = Object.entries(model.metrics ?? {})
      .filter(([, value]) => value === null || typeof value === "number")
      .sort(([a], [b]) => orderOf(a) - orderOf(b))
      .map(([name, value]) => {
        const row = document.createElement("tr");
        const head = document.createElement("th");
        head.scope = "row";
        head.textContent = METRIC_LABELS[name] ?? name;
        const cell = document.createElement("td");
        cell.textContent = formatMetric(value);
        row.append(head, cell);
        return row;
      });
    this.metrics.replaceChildren(...rows);
  }
}

const ORDER = Object.keys(METRIC_LABELS);
const orderOf = (name) => (ORDER.includes(name) ? ORDER.indexOf(name) : ORDER.length);
