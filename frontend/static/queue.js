// The review queue: unlabelled titles from the server, one after another.
// Where the user is and which titles they submitted survive reloads.

import { load, save } from "./storage.js";

const CURSOR_KEY = "tagloop.queue.cursor";
const SUBMITTED_KEY = "tagloop.queue.submitted";
export const PAGE_SIZE = 20;

export class Queue {
  /**
   * @param {(offset: number, limit: number) => Promise<{total: number, offset: number,
   *          items: Array<{index: number, title: string}>}>} fetchPage
   * @param {(items: Array<{index: number, title: string}>) => Promise<void>} onPage
   *   runs on each newly loaded page's titles still to review (to predict them at once)
   */
  constructor(fetchPage, onPage) {
    this.fetchPage = fetchPage;
    this.onPage = onPage;
    const cursor = load(CURSOR_KEY, 0);
    const submitted = load(SUBMITTED_KEY, []);
    this.cursor = Number.isInteger(cursor) && cursor >= 0 ? cursor : 0;
    this.submitted = new Set(Array.isArray(submitted) ? submitted : []);
    this.page = null;
    this.total = null;
  }

  /** The item at the cursor, skipping titles already submitted here; null at the end. */
  async current() {
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

  advance() {
    this.cursor += 1;
    save(CURSOR_KEY, this.cursor);
  }

  markSubmitted(title) {
    this.submitted.add(title);
    save(SUBMITTED_KEY, [...this.submitted]);
  }
}
