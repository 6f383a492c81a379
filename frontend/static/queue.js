// The review queue: unlabelled titles from the server, one after another.
// Where the user is and which titles they submitted survive reloads.
// Titles another annotator already corrected and nobody else has come first
// (second opinions, so that agreement accrues); asked for again at most every
// SECOND_OPINION_REFRESH_MS once the last list is used up.

import { load, save } from "./storage.js";

const CURSOR_KEY = "tagloop.queue.cursor";
const SUBMITTED_KEY = "tagloop.queue.submitted";
export const PAGE_SIZE = 20;
export const SECOND_OPINION_REFRESH_MS = 30_000;

export class Queue {
  /**
   * @param {(offset: number, limit: number) => Promise<{total: number, offset: number,
   *          items: Array<{index: number, title: string}>}>} fetchPage
   * @param {(items: Array<{index: number, title: string}>) => Promise<void>} onPage
   *   runs on each newly loaded page's titles still to review (to predict them at once)
   * @param {() => Promise<{items: string[]}>} fetchSecondOpinions
   *   titles awaiting a second opinion from this annotator, oldest first
   */
  constructor(fetchPage, onPage, fetchSecondOpinions) {
    this.fetchPage = fetchPage;
    this.onPage = onPage;
    this.fetchSecondOpinions = fetchSecondOpinions;
    this.secondOpinions = null; // Array<{index: null, title, secondOpinion: true}>
    this.secondOpinionsAt = 0;
    this.passed = new Set(); // second-opinion titles submitted or skipped in this page's life
    this.head = null; // the item current() returned last
    const cursor = load(CURSOR_KEY, 0);
    const submitted = load(SUBMITTED_KEY, []);
    this.cursor = Number.isInteger(cursor) && cursor >= 0 ? cursor : 0;
    this.submitted = new Set(Array.isArray(submitted) ? submitted : []);
    this.page = null;
    this.total = null;
  }

  /** A title awaiting a second opinion, else the item at the cursor; null at the end. */
  async current() {
    this.head = (await this.secondOpinion()) ?? (await this.fromFile());
    return this.head;
  }

  /** The first second-opinion title not yet passed here; the list is refreshed when used up. */
  async secondOpinion() {
    const done = (item) => this.submitted.has(item.title) || this.passed.has(item.title);
    this.secondOpinions = (this.secondOpinions ?? []).filter((item) => !done(item));
    if (!this.secondOpinions.length && Date.now() >= this.secondOpinionsAt) {
      this.secondOpinionsAt = Date.now() + SECOND_OPINION_REFRESH_MS;
      let titles = [];
      try {
        titles = (await this.fetchSecondOpinions()).items;
      } catch {
        titles = []; // only the order is lost: the file's titles still come
      }
      this.secondOpinions = titles
        .map((title) => ({ index: null, title, secondOpinion: true }))
        .filter((item) => !done(item));
      if (this.secondOpinions.length) await this.onPage(this.secondOpinions);
    }
    return this.secondOpinions[0] ?? null;
  }

  /** The item at the cursor, skipping titles already submitted here; null at the end. */
  async fromFile() {
    for (;;) {
      if (this.total !== null && this.cursor >= this.total) return null;
      if (!this.covers(this.cursor)) {
        this.page = await this.fetchPage(this.cursor, PAGE_SIZE);
        this.total = this.page.total;
        if (!this.page.items.length) return null;
        const pending = this.pending();
        if (pending.length) await this.onPage(pending);
      }
      const item = this.page.items[this.cursor - this.page.offset];
      if (!this.submitted.has(item.title)) return item;
      this.cursor += 1;
      save(CURSOR_KEY, this.cursor);
    }
  }

  covers(index) {
    if (this.page === null) return false;
    return index >= this.page.offset && index < this.page.offset + this.page.items.length;
  }

  pending() {
    return this.page.items.filter(
      (item) => item.index >= this.cursor && !this.submitted.has(item.title),
    );
  }

  /** Past the item current() returned: a second opinion is passed, the file cursor moves. */
  advance() {
    if (this.head?.secondOpinion) {
      this.passed.add(this.head.title);
      return;
    }
    this.cursor += 1;
    save(CURSOR_KEY, this.cursor);
  }

  markSubmitted(title) {
    this.submitted.add(title);
    save(SUBMITTED_KEY, [...this.submitted]);
  }
}
