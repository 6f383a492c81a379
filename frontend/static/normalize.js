// Tag normalisation, step for step as tagloop.domain.tags.normalize_tag on the server.
// Every table comes from the server (/ui/config "tag_rules"), built from the
// Python code, and a test runs both on the same inputs, so they cannot drift.

function escapeForClass(chars) {
  return Array.from(chars, (ch) => `\\u{${ch.codePointAt(0).toString(16)}}`).join("");
}

/**
 * @param {{aliases: Object<string,string>, max_length: number, syntax: string,
 *          whitespace: string, fold: Object<string,string>}} rules
 * @returns {(raw: string) => ({ok: true, tag: string} | {ok: false, reason: string})}
 */
export function createNormalizer(rules) {
  const aliases = new Map(Object.entries(rules.aliases));
  const fold = new Map(Object.entries(rules.fold));
  const space = new Set(Array.from(rules.whitespace));
  const spaceRuns = new RegExp(`[${escapeForClass(rules.whitespace)}_]+`, "gu");
  const syntax = new RegExp(rules.syntax, "u");

  function strip(text) {
    const chars = Array.from(text);
    let start = 0;
    let end = chars.length;
    while (start < end && space.has(chars[start])) start++;
    while (end > start && space.has(chars[end - 1])) end--;
    return chars.slice(start, end).join("");
  }

  // Python's str.casefold(): lower case, plus the few full foldings ("ß" -> "ss").
  const casefold = (text) => Array.from(text, (ch) => fold.get(ch) ?? ch.toLowerCase()).join("");

  return function normalize(raw) {
    let tag = casefold(strip(String(raw))).replace(spaceRuns, "-");
    tag = tag.replace(/-{2,}/g, "-");
    tag = aliases.get(tag) ?? tag;
    if (!tag) return { ok: false, reason: "A tag cannot be empty." };
    if (Array.from(tag).length > rules.max_length) {
      return { ok: false, reason: `A tag can have at most ${rules.max_length} characters.` };
    }
    if (!syntax.test(tag)) {
      return {
        ok: false,
        reason:
          `“${tag}” is not a valid tag: use letters, digits and + # - . only, ` +
          "with at least one letter or digit, not ending in - or .",
      };
    }
    return { ok: true, tag };
  };
}
