"""The validated test set: titles two annotators agree on, kept apart from training (issue 18).

The fixed test set never changes, so the gate cannot see new tags or new kinds
of titles. The validated set grows with the corrections themselves:

- **Agreement.** For each title (normalised: NFKC, case-folded, whitespace
  collapsed, `normalize_title`) take every annotator's *latest* correction
  (arrival order in the store) and its tag set (normalised, order ignored).
  The title is validated when one tag set is given by at least two distinct
  annotators and by strictly more annotators than any other tag set: a unique
  plurality of at least two. That set is the title's label. Rows without an
  annotator (stored before annotator ids existed) are not counted: nobody can
  tell whether two of them came from two people. A later dissent can undo a
  plurality, and the title leaves the set (and may be trained on again).
- **Apart from training.** Every training row whose normalised title is in the
  set is dropped (a bootstrap row with that title included), so a candidate is
  never scored on a title it was fitted on.
- **Versioned, digested.** The digest is the sha256 of the canonical form:
  one line per entry, sorted by normalised title, each the compact JSON array
  `[title, [sorted tags]]`. Each distinct digest gets the next version number,
  kept in `versions.jsonl` beside the entries of each version
  (`v000001.jsonl`), so a version named in a candidate's metadata can be read
  back after the store has moved on.

Every candidate records `{"version", "digest", "size", "metrics"}` under
`metadata["validated"]` (docs/contracts.md); the metrics are those of
`evaluate` plus per-tag F1, or None while the set is empty.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learning_service.store import StoredFeedback
from learning_service.training import Corpus
from tagloop.domain.text import normalize_title

DIRECTORY = "validated"
INDEX_NAME = "versions.jsonl"
MIN_ANNOTATORS = 2


@dataclass(frozen=True)
class ValidatedSet:
    """Normalised title -> agreed tags (sorted), with the version it was recorded as."""

    entries: dict[str, tuple[str, ...]]
    version: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    def canonical(self) -> bytes:
        """The bytes the digest is taken over: sorted titles, one JSON line each."""
        return b"".join(
            json.dumps(
                [title, list(self.entries[title])], ensure_ascii=False, separators=(",", ":")
            ).encode()
            + b"\n"
            for title in sorted(self.entries)
        )

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def corpus(self) -> Corpus:
        """The set as a test corpus, in canonical order."""
        titles = sorted(self.entries)
        return Corpus(titles, [list(self.entries[title]) for title in titles])

    def contains(self, title: str) -> bool:
        return normalize_title(title) in self.entries

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest(), "size": len(self)}


def tag_set(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags compared as a set: duplicates and order do not matter (stored tags are normalised)."""
    return tuple(sorted(set(tags)))


def latest_labels(rows: Iterable[StoredFeedback]) -> dict[str, dict[str, tuple[str, ...]]]:
    """Normalised title -> annotator -> that annotator's latest tag set (anonymous rows skipped)."""
    labels: dict[str, dict[str, tuple[str, ...]]] = {}
    for row in rows:
        if row.annotator:
            labels.setdefault(normalize_title(row.title), {})[row.annotator] = tag_set(row.tags)
    return labels


def agreed_tags(by_annotator: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The tag set a unique plurality of at least two annotators gave, else None."""
    ranked = Counter(by_annotator.values()).most_common(2)
    if not ranked or ranked[0][1] < MIN_ANNOTATORS:
        return None
    if len(ranked) == 2 and ranked[1][1] == ranked[0][1]:
        return None
    return ranked[0][0]


def build(rows: Iterable[StoredFeedback]) -> ValidatedSet:
    """The validated set the stored corrections define (unversioned)."""
    entries = {}
    for title, by_annotator in latest_labels(rows).items():
        agreed = agreed_tags(by_annotator)
        if agreed is not None:
            entries[title] = agreed
    return ValidatedSet(entries)


def without_validated(corpus: Corpus, validated: ValidatedSet) -> Corpus:
    """`corpus` minus every row whose normalised title is in the validated set."""
    kept = [
        (title, tags)
        for title, tags in zip(corpus.titles, corpus.tags, strict=True)
        if not validated.contains(title)
    ]
    return Corpus([title for title, _ in kept], [tags for _, tags in kept])


class ValidatedVersions:
    """The versions recorded in a directory: an index line per version, entries per version.

    Only the learner's refit thread writes here; each file is written whole
    and renamed into place, the index line last, so a crash leaves at most an
    unreferenced entries file that the next record overwrites.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.index = directory / INDEX_NAME

    def versions(self) -> list[dict[str, Any]]:
        """Every recorded version's summary, oldest first (a torn last line is ignored)."""
        try:
            lines = self.index.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def latest(self) -> dict[str, Any] | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def latest_size(self) -> float:
        """The latest version's size for the gauge (0 before the first fit recorded one)."""
        latest = self.latest()
        return float(latest["size"]) if latest else 0.0

    def load(self, version: int) -> ValidatedSet:
        """A recorded version read back (to re-score an older model on it); ValueError if its
        entries file is missing or does not match the digest in the index."""
        summary = next((v for v in self.versions() if v.get("version") == version), None)
        if summary is None:
            raise ValueError(f"validated set version {version} was never recorded")
        try:
            raw = (self.directory / f"v{version:06d}.jsonl").read_bytes()
        except FileNotFoundError:
            raise ValueError(f"validated set version {version}: entries file missing") from None
        entries = {}
        for line in raw.splitlines():
            title, tags = json.loads(line)
            entries[title] = tuple(tags)
        loaded = ValidatedSet(entries, version)
        if loaded.digest() != summary["digest"]:
            raise ValueError(f"validated set version {version} does not match its digest")
        return loaded

    def record(self, current: ValidatedSet) -> ValidatedSet:
        """`current` with its version: the latest one if the digest is unchanged, else a new one."""
        latest = self.latest()
        digest = current.digest()
        if latest is not None and latest["digest"] == digest:
            return ValidatedSet(current.entries, int(latest["version"]))
        version = int(latest["version"]) + 1 if latest else 1
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.directory / f"v{version:06d}.jsonl", current.canonical())
        versioned = ValidatedSet(current.entries, version)
        with self.index.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(versioned.summary()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return versioned


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def split_training(
    train: Corpus, rows: Sequence[StoredFeedback], data_dir: Path
) -> tuple[Corpus, ValidatedSet]:
    """The refit hook: record the validated set `rows` define, and `train` without its titles."""
    validated = ValidatedVersions(data_dir / DIRECTORY).record(build(rows))
    return without_validated(train, validated), validated


def per_tag_f1(truth: Sequence[Sequence[str]], chosen: Sequence[Sequence[str]]) -> dict[str, Any]:
    """F1 and support of every tag in the truth or the predictions (new tags become visible)."""
    tp: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    support: Counter[str] = Counter()
    for expected, predicted in zip(truth, chosen, strict=True):
        wanted, got = set(expected), set(predicted)
        tp.update(wanted & got)
        errors.update(wanted ^ got)
        support.update(wanted)
    return {
        tag: {"f1": 2 * tp[tag] / (2 * tp[tag] + errors[tag]), "support": support[tag]}
        for tag in sorted(set(tp) | set(errors))
    }


def score_candidate(bundle_dir: str, sha256: str, validated: ValidatedSet) -> dict[str, Any]:
    """metadata["validated"] for a fitted bundle (runs in the fit worker: scikit-learn inside)."""
    summary = validated.summary()
    if not len(validated):
        return {**summary, "metrics": None}
    from tagloop.domain.bundle import load_bundle
    from tagloop.domain.evaluation import evaluate

    model, _ = load_bundle(bundle_dir, sha256)
    test = validated.corpus()
    metrics = evaluate(model, test.titles, test.tags)
    chosen = model.predict_tag_sets(test.titles)
    return {**summary, "metrics": {**metrics, "per_tag": per_tag_f1(test.tags, chosen)}}
