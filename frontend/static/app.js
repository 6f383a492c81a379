// Wiring: title -> live prediction -> tag editor -> feedback, in single or queue mode.

import { api, describeError, isNoModel } from "./api.js";
import { ModelPanel } from "./model-panel.js";
import { createNormalizer } from "./normalize.js";
import { Queue } from "./queue.js";
import { load, save } from "./storage.js";
import { Submission } from "./submission.js";
import { TagEditor, percent } from "./tag-editor.js";

const PREDICT_DEBOUNCE_MS = 250;
const DRAFT_KEY = "tagloop.draft";
const $ = (id) => document.getElementById(id);

const ui = {
  title: $("title"),
  titleError: $("title-error"),
  status: $("prediction-status"),
  submit: $("submit"),
  submitError: $("submit-error"),
  submitStatus: $("submit-status"),
  queueBar: $("queue-bar"),
  queuePosition: $("queue-position"),
  queueError: $("queue-error"),
  queueActions: $("queue-actions"),
  accept: $("queue-accept"),
  announcer: $("announcer"),
};

function showError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

function announce(text) {
  ui.announcer.textContent = text;
}

class App {
  constructor(config) {
    this.editor = new TagEditor(
      {
        list: $("tags"),
        input: $("add-tag"),
        listbox: $("tag-options"),
        error: $("add-tag-error"),
        empty: $("tags-empty"),
        suggestions: $("suggestions"),
        announce,
      },
      createNormalizer(config.tag_rules),
    );
    this.panel = new ModelPanel(
      {
        versionEl: $("model-version"),
        loaded: $("model-loaded"),
        metrics: $("model-metrics"),
        details: $("model-details"),
        waiting: $("model-waiting"),
        notice: $("model-notice"),
        noticeText: $("model-notice-text"),
        error: $("model-error"),
      },
      config.model_poll_seconds,
      {
        onChange: (version) => {
          announce(`A new model is serving: ${version}.`);
          this.loadVocabulary();
        },
        onRecover: () => {
          this.loadVocabulary();
          this.predictIfMissing();
        },
      },
    );
    this.queue = new Queue(api.queue, (items) => this.prefetch(items), api.secondOpinions);
    this.predictions = new Map(); // title -> prediction, prefetched for the queue
    this.mode = "single";
    this.queueItem = null;
    this.timer = null;
    this.inflight = null;
    this.sending = false;
    const draft = load(DRAFT_KEY, null);
    this.submission = new Submission(draft?.pending ?? null);
    if (draft) {
      ui.title.value = draft.title ?? "";
      this.editor.restore(draft.edits);
    }
  }

  start() {
    ui.title.addEventListener("input", () => {
      this.saveDraft();
      this.schedulePredict();
    });
    ui.title.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
        event.preventDefault();
        this.predictNow();
        this.editor.input.focus();
      }
    });
    this.editor.addEventListener("change", () => {
      showError(ui.submitError, "");
      this.saveDraft();
    });
    $("tag-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.submit();
      }
    });
    ui.accept.addEventListener("click", () => this.submit());
    $("queue-edit").addEventListener("click", () => this.editor.input.focus());
    $("queue-skip").addEventListener("click", () => this.skip());
    $("queue-retry").addEventListener("click", () => this.showQueueItem());
    // Single-key shortcuts only while a queue button has focus (WCAG 2.1.4).
    ui.queueActions.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
      const actions = {
        a: () => this.submit(),
        e: () => this.editor.input.focus(),
        s: () => this.skip(),
      };
      const action = actions[event.key.toLowerCase()];
      if (action) {
        event.preventDefault();
        action();
      }
    });
    $("mode-single").addEventListener("click", () => this.setMode("single"));
    $("mode-queue").addEventListener("click", () => this.setMode("queue"));
    window.addEventListener("hashchange", () => this.setMode(modeFromHash()));
    window.addEventListener("online", () => this.predictIfMissing());
    $("model-notice-predict").addEventListener("click", () => {
      $("model-notice").hidden = true;
      this.predictNow();
    });
    $("model-notice-dismiss").addEventListener("click", () => {
      $("model-notice").hidden = true;
    });
    this.loadVocabulary();
    this.panel.start();
    if (modeFromHash() === "queue") this.setMode("queue");
    else if (ui.title.value.trim()) this.predictNow();
  }

  async loadVocabulary() {
    try {
      this.editor.setVocabulary((await api.tags()).tags);
    } catch {
      // Autocomplete stays empty; the model panel already explains an outage.
    }
  }

  saveDraft() {
    if (this.mode !== "single") return;
    save(DRAFT_KEY, {
      title: ui.title.value,
      edits: this.editor.snapshot(),
      pending: this.submission.pending,
    });
  }

  /** After an outage: predict again, unless a correction awaits its retry (it must not change). */
  predictIfMissing() {
    if (!this.editor.prediction && !this.submission.pending) this.predictNow();
  }

  schedulePredict() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.predictNow(), PREDICT_DEBOUNCE_MS);
  }

  async predictNow() {
    clearTimeout(this.timer);
    this.inflight?.abort();
    const title = ui.title.value.trim();
    if (!title) {
      this.editor.setPrediction(null);
      ui.status.textContent = "";
      showError(ui.titleError, "");
      return;
    }
    const controller = new AbortController();
    this.inflight = controller;
    let prediction;
    try {
      prediction = await api.predict(title, controller.signal);
    } catch (error) {
      if (error.name === "AbortError") return;
      this.editor.setPrediction(null);
      ui.status.textContent = "";
      showError(ui.titleError, describeError(error, "predict"));
      const titleRefused = error.status >= 400 && error.status < 500 && !isNoModel(error);
      ui.title.setAttribute("aria-invalid", String(titleRefused));
      return;
    }
    if (ui.title.value.trim() !== title) return;
    this.showPrediction(prediction);
  }

  showPrediction(prediction) {
    showError(ui.titleError, "");
    ui.title.setAttribute("aria-invalid", "false");
    this.editor.setPrediction(prediction);
    const list = prediction.tags.map((t) => `${t.tag} ${percent(t.score)}`).join(", ");
    const version = prediction.model_version ?? "unknown";
    ui.status.textContent = `Predicted by model ${version}: ${list || "no tags"}.`;
  }

  async submit() {
    if (this.sending) return;
    showError(ui.submitError, "");
    if (!this.editor.commitInput()) return;
    const title = ui.title.value.trim();
    if (!title) {
      showError(ui.submitError, "Type a title first.");
      ui.title.focus();
      return;
    }
    const tags = this.editor.tags();
    if (!tags.length) {
      showError(ui.submitError, "Add at least one tag before submitting.");
      this.editor.input.focus();
      return;
    }
    // The prediction counts only if it was made for exactly this title.
    const current = this.editor.prediction?.title === title;
    const payload = this.submission.prepare({
      title,
      tags,
      predicted_tags: current ? this.editor.predictedTags() : [],
      model_version: current ? this.editor.modelVersion() : null,
    });
    this.saveDraft();
    this.sending = true;
    ui.submit.setAttribute("aria-disabled", "true");
    ui.submitStatus.textContent = "Sending…";
    try {
      await api.feedback(payload);
    } catch (error) {
      ui.submitStatus.textContent = "";
      showError(ui.submitError, describeError(error, "submit"));
      return;
    } finally {
      this.sending = false;
      ui.submit.removeAttribute("aria-disabled");
    }
    this.submission.confirmed();
    ui.submitStatus.textContent =
      `Received: “${title}” with ${tags.join(", ")}. Thank you, the next model learns from it.`;
    if (this.mode === "queue") {
      this.queue.markSubmitted(this.queueItem?.title ?? title);
      this.queue.advance();
      await this.showQueueItem();
    } else {
      this.clear();
      ui.title.focus();
    }
  }

  clear() {
    ui.title.value = "";
    ui.status.textContent = "";
    showError(ui.titleError, "");
    this.editor.reset();
    this.saveDraft();
  }

  async setMode(mode) {
    if (mode === this.mode) return;
    this.mode = mode;
    $("mode-single").setAttribute("aria-pressed", String(mode === "single"));
    $("mode-queue").setAttribute("aria-pressed", String(mode === "queue"));
    ui.queueBar.hidden = mode !== "queue";
    if (location.hash !== (mode === "queue" ? "#queue" : "")) {
      history.replaceState(null, "", mode === "queue" ? "#queue" : location.pathname);
    }
    showError(ui.submitError, "");
    ui.submitStatus.textContent = "";
    if (mode === "queue") {
      await this.showQueueItem();
    } else {
      const draft = load(DRAFT_KEY, null);
      this.editor.reset();
      ui.title.value = draft?.title ?? "";
      this.editor.restore(draft?.edits);
      this.submission = new Submission(draft?.pending ?? null);
      this.predictNow();
    }
  }

  async showQueueItem() {
    showError(ui.queueError, "");
    $("queue-retry").hidden = true;
    let item;
    try {
      item = await this.queue.current();
    } catch (error) {
      showError(ui.queueError, "Could not load the queue. " + describeError(error, "load"));
      $("queue-retry").hidden = false;
      return;
    }
    this.queueItem = item;
    this.editor.reset();
    this.submission = new Submission();
    if (!item) {
      ui.title.value = "";
      ui.queuePosition.textContent = "The queue is empty: every title has been reviewed here.";
      return;
    }
    const where = item.secondOpinion
      ? "Second opinion: another annotator tagged this title"
      : `Title ${(item.index + 1).toLocaleString("en")} of ${this.queue.total.toLocaleString("en")}`;
    ui.queuePosition.textContent =
      `${where} · ${this.queue.submitted.size.toLocaleString("en")} submitted in this browser`;
    ui.title.value = item.title;
    const ready = this.predictions.get(item.title);
    if (ready) this.showPrediction(ready);
    else this.predictNow();
    if (!ui.queueActions.contains(document.activeElement)) ui.accept.focus();
  }

  async skip() {
    if (!this.queueItem || this.sending) return;
    this.queue.advance();
    ui.submitStatus.textContent = "";
    await this.showQueueItem();
    announce("Skipped.");
  }

  /** Predict a queue page in one request, so each title's tags are ready when shown. */
  async prefetch(items) {
    try {
      const { predictions } = await api.predictMany(items.map((item) => item.title));
      this.predictions.clear(); // the previous page is behind us
      for (const prediction of predictions) this.predictions.set(prediction.title, prediction);
    } catch {
      // Each title is then predicted when shown; its error appears there.
    }
  }
}

function modeFromHash() {
  return location.hash === "#queue" ? "queue" : "single";
}

async function main() {
  let config;
  try {
    config = await api.config();
  } catch (error) {
    showError(ui.titleError, "The page could not start. " + describeError(error, "load"));
    return;
  }
  new App(config).start();
}

main();
