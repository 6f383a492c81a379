// The tags of the current title: the model's prediction plus the user's edits.
//
// Edits (tags removed from the prediction, tags added) are kept apart from the
// prediction, so a fresh prediction while the user keeps typing never throws
// away what they chose.

import { Autocomplete } from "./autocomplete.js";

const MAX_OPTIONS = 8;
const MAX_SUGGESTIONS = 5;

export const percent = (score) => `${Math.round(score * 100)}%`;

export class TagEditor extends EventTarget {
  /**
   * @param {{list: HTMLUListElement, input: HTMLInputElement, listbox: HTMLElement,
   *          error: HTMLElement, empty: HTMLElement, suggestions: HTMLElement,
   *          announce: (text: string) => void}} parts
   * @param {(raw: string) => ({ok: boolean, tag?: string, reason?: string})} normalize
   */
  constructor(parts, normalize) {
    super();
    Object.assign(this, parts);
    this.normalize = normalize;
    this.vocabulary = new Set();
    this.prediction = null;
    this.removed = new Set();
    this.added = [];
    this.autocomplete = new Autocomplete(this.input, this.listbox, {
      suggest: (text) => this.options(text),
      pick: (value, text) => {
        if (value === null && !text.trim()) return;
        if (this.add(value ?? text)) this.input.value = "";
      },
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Backspace" && !this.input.value) {
        const chips = this.chips();
        if (chips.length) this.remove(chips[chips.length - 1].tag, false);
      }
    });
    this.input.addEventListener("input", () => this.showError(""));
    this.list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-remove]");
      if (button) this.remove(button.dataset.remove, true);
    });
    this.list.addEventListener("keydown", (event) => {
      const button = event.target.closest("button[data-remove]");
      if (button && (event.key === "Backspace" || event.key === "Delete")) {
        event.preventDefault();
        this.remove(button.dataset.remove, true);
      }
    });
    this.suggestions.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-add]");
      if (button) this.add(button.dataset.add);
    });
    this.render();
  }

  setVocabulary(tags) {
    this.vocabulary = new Set(tags);
    this.render();
  }

  /** A new prediction (or null when there is none); the user's edits stay. */
  setPrediction(prediction) {
    this.prediction = prediction;
    this.render();
  }

  /** Forget prediction and edits: the next title starts afresh. */
  reset() {
    this.prediction = null;
    this.removed.clear();
    this.added = [];
    this.input.value = "";
    this.showError("");
    this.render();
    this.changed();
  }

  /** The user's edits, for saving a draft. */
  snapshot() {
    return { removed: [...this.removed], added: [...this.added] };
  }

  restore(edits) {
    this.removed = new Set(edits?.removed ?? []);
    this.added = [...(edits?.added ?? [])];
    this.render();
  }

  modelVersion() {
    return this.prediction?.model_version ?? null;
  }

  predictedTags() {
    return (this.prediction?.tags ?? []).map((t) => t.tag);
  }

  tags() {
    return this.chips().map((chip) => chip.tag);
  }

  scores() {
    const known = new Map();
    for (const { tag, score } of this.prediction?.candidates ?? []) known.set(tag, score);
    for (const { tag, score } of this.prediction?.tags ?? []) known.set(tag, score);
    return known;
  }

  /** Current tags, best score first; tags without a score keep the order they were added in. */
  chips() {
    const scores = this.scores();
    const shown = new Set();
    const chips = [];
    for (const { tag, score } of this.prediction?.tags ?? []) {
      if (!this.removed.has(tag) && !shown.has(tag)) {
        shown.add(tag);
        chips.push({ tag, score, predicted: true });
      }
    }
    for (const tag of this.added) {
      if (!shown.has(tag)) {
        shown.add(tag);
        chips.push({ tag, score: scores.get(tag) ?? null, predicted: false });
      }
    }
    return chips.sort((a, b) => (b.score ?? -1) - (a.score ?? -1));
  }

  /**
   * Before submitting: add what is still in the tag input (its highlighted
   * option, if any). False, with the reason shown, if it is not a valid tag.
   */
  commitInput() {
    const option = this.autocomplete.options[this.autocomplete.active];
    const text = option ? option.value : this.input.value;
    const result = this.normalize(text);
    if (!text.trim() || (result.ok && this.tags().includes(result.tag))) {
      this.input.value = "";
    } else if (this.add(text)) {
      this.input.value = "";
    } else {
      return false;
    }
    this.autocomplete.close();
    return true;
  }

  /** Add a tag typed or picked by the user; false (with the reason shown) if refused. */
  add(raw) {
    const result = this.normalize(raw);
    if (!result.ok) {
      this.showError(result.reason);
      return false;
    }
    const { tag } = result;
    if (this.tags().includes(tag)) {
      this.showError(`“${tag}” is already in the list.`);
      return false;
    }
    this.removed.delete(tag);
    if (!this.predictedTags().includes(tag)) this.added.push(tag);
    this.showError("");
    this.render();
    const isNew = !this.vocabulary.has(tag);
    this.announce(`Added ${tag}${isNew ? ", a new tag" : ""}.`);
    this.changed();
    return true;
  }

  remove(tag, keepFocusInList) {
    const before = this.tags();
    const position = before.indexOf(tag);
    if (position < 0) return;
    if (this.predictedTags().includes(tag)) this.removed.add(tag);
    this.added = this.added.filter((t) => t !== tag);
    this.render();
    this.announce(`Removed ${tag}.`);
    this.changed();
    const buttons = this.list.querySelectorAll("button[data-remove]");
    const next = buttons[Math.min(position, buttons.length - 1)];
    if (keepFocusInList && next) next.focus();
    else this.input.focus();
  }

  /** Autocomplete options: vocabulary matches, model scores first, then the typed tag. */
  options(text) {
    const query = text.trim().toLowerCase().replace(/[\s_]+/g, "-");
    const chosen = new Set(this.tags());
    const scores = this.scores();
    const rank = (a, b) =>
      (scores.get(b) ?? -1) - (scores.get(a) ?? -1) || a.length - b.length || a.localeCompare(b);
    const starts = [];
    const contains = [];
    for (const tag of this.vocabulary) {
      if (chosen.has(tag)) continue;
      if (tag.startsWith(query)) starts.push(tag);
      else if (tag.includes(query)) contains.push(tag);
    }
    const values = [...starts.sort(rank), ...contains.sort(rank)].slice(0, MAX_OPTIONS);
    const typed = this.normalize(text);
    if (typed.ok && !chosen.has(typed.tag) && !values.includes(typed.tag)) {
      if (this.vocabulary.has(typed.tag)) values.unshift(typed.tag);
      else values.push(typed.tag);
    }
    return values.map((value) => ({
      value,
      note: !this.vocabulary.has(value)
        ? "new tag"
        : scores.has(value)
          ? percent(scores.get(value))
          : "",
    }));
  }

  showError(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
    this.input.setAttribute("aria-invalid", String(Boolean(message)));
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  render() {
    const chips = this.chips();
    this.list.replaceChildren(...chips.map((chip) => this.renderChip(chip)));
    this.empty.hidden = chips.length > 0;
    const chosen = new Set(chips.map((chip) => chip.tag));
    const more = (this.prediction?.candidates ?? [])
      .filter((c) => !chosen.has(c.tag))
      .slice(0, MAX_SUGGESTIONS);
    this.suggestions.hidden = more.length === 0;
    this.suggestions
      .querySelector("ul")
      .replaceChildren(...more.map((c) => this.renderSuggestion(c)));
  }

  renderChip({ tag, score, predicted }) {
    const item = document.createElement("li");
    item.className = "chip";
    item.dataset.tag = tag;
    const name = document.createElement("span");
    name.className = "chip-tag";
    name.textContent = tag;
    item.append(name, " ");
    if (score !== null) item.append(scoreBar(score), " ");
    if (!this.vocabulary.has(tag) && this.vocabulary.size) {
      item.append(badge("new", "badge-new"), " ");
    } else if (!predicted) {
      item.append(badge("added", "badge-added"), " ");
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chip-remove";
    remove.dataset.remove = tag;
    remove.setAttribute("aria-label", `Remove ${tag}`);
    remove.title = `Remove ${tag} (Backspace)`;
    remove.textContent = "×";
    item.append(remove);
    return item;
  }

  renderSuggestion({ tag, score }) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "suggestion";
    button.dataset.add = tag;
    button.setAttribute("aria-label", `Add ${tag} (${percent(score)})`);
    button.append(`+ ${tag} `, scoreBar(score));
    item.append(button);
    return item;
  }
}

function badge(text, className) {
  const span = document.createElement("span");
  span.className = `badge ${className}`;
  span.textContent = text;
  return span;
}

function scoreBar(score) {
  const wrap = document.createElement("span");
  wrap.className = "score";
  wrap.title = `Estimated chance this tag is right: ${percent(score)}`;
  const bar = document.createElement("span");
  bar.className = "score-bar";
  bar.setAttribute("aria-hidden", "true");
  const fill = document.createElement("span");
  fill.className = "score-fill";
  // CSSOM, not a style attribute: allowed by the style-src 'self' policy.
  fill.style.width = percent(Math.min(Math.max(score, 0), 1));
  bar.append(fill);
  const text = document.createElement("span");
  text.className = "score-text";
  text.textContent = percent(score);
  wrap.append(bar, text);
  return wrap;
}
