// Sending a correction at most once: a retry reuses the feedback_id.

export function uuid4() {
  // crypto.getRandomValues, unlike crypto.randomUUID, also exists on plain http origins.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const parts = [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20)];
  return [...parts, hex.slice(20)].join("-");
}

export class Submission {
  /** @param {{feedback_id: string, key: string} | null} pending a saved unconfirmed attempt */
  constructor(pending = null) {
    this.pending = pending;
  }

  /**
   * The payload to send: the same correction keeps the feedback_id of its
   * unconfirmed earlier attempt (the server may have published it already);
   * a changed correction is a new one and gets a new id.
   */
  prepare(correction) {
    const key = JSON.stringify(correction);
    if (!this.pending || this.pending.key !== key) this.pending = { feedback_id: uuid4(), key };
    return { ...correction, feedback_id: this.pending.feedback_id };
  }

  /** The server confirmed (202): the next correction starts a new id. */
  confirmed() {
    this.pending = null;
  }
}
