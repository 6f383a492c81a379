"""SIGKILL the learner at random moments while feedback flows: nothing lost, nothing twice."""

from __future__ import annotations

import csv
import random
import threading
from pathlib import Path

from learning_service.store import FIELDS, HEADER, StoredFeedback
from tagloop.domain.data import load_labeled
from tagloop.domain.messages import Feedback
from tests.fixtures.learning import DATA_DIR, LearnerStack
from tests.fixtures.wait import wait_until

DISTINCT = 2000
KILLS = 3


def children(pid: int) -> set[int]:
    """Direct child processes of `pid` (the fit worker, the resource tracker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def stored_rows(path: Path) -> int:
    return max(0, path.read_bytes().count(b"\n") - 1) if path.exists() else 0


def test_sigkill_at_random_moments_loses_nothing_and_stores_nothing_twice(
    learner_stack: LearnerStack,
):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"crash schedule seed: {seed}")
    data = load_labeled(DATA_DIR / "feedback.tsv")
    distinct = [
        Feedback(title=title, tags=tags, feedback_id=f"crash-{i}")
        for i, (title, tags) in enumerate(zip(data.titles[:DISTINCT], data.tags, strict=False))
    ]
    stream: list[Feedback] = []
    for message in distinct:  # about one in five re-published later, as a retrying client would
        stream.append(message)
        if rng.random() < 0.2:
            stream.append(rng.choice(stream))

    bus = learner_stack.bus
    path = bus.topic_path(learner_stack.feedback_topic)
    # Pub/Sub's shortest ack deadline: what a killed learner had pulled comes back within 10 s.
    learner_stack.subscribe_learner(ack_deadline_seconds=10)

    def publish_slowly() -> None:
        for start in range(0, len(stream), 50):
            chunk = [m.to_message() for m in stream[start : start + 50]]
            for future in [bus.publisher.publish(path, d, **a) for d, a in chunk]:
                future.result(timeout=30)
            done.wait(rng.uniform(0.05, 0.2))  # spread over the kills: about 6 s

    done = threading.Event()
    publisher = threading.Thread(target=publish_slowly)
    csv_path = learner_stack.feedback_csv()
    env = {"TAGLOOP_REFIT_EVERY": "1000000"}
    learner = learner_stack.learner(**env).start(ready=False)
    publisher.start()
    wait_until(lambda: stored_rows(csv_path) > 0, timeout=20, what="the first stored rows")

    killed: list[tuple[int, set[int]]] = []
    rows_at_kill = []
    for _ in range(KILLS):
        done.wait(rng.uniform(0.1, 1.2))  # a random moment: this is the chaos, not a wait
        assert learner.process is not None
        pid = learner.process.pid
        killed.append((pid, children(pid)))
        learner.kill()
        rows_at_kill.append(stored_rows(csv_path))
        learner = learner_stack.learner(**env).start(ready=False)
    publisher.join(timeout=60)
    done.set()

    status = wait_until(
        lambda: learner.get("/api/status")["corpus"]["feedback_rows"] == DISTINCT,
        timeout=45,
        what=f"all {DISTINCT} distinct feedback stored (stored at kills: {rows_at_kill})",
    )
    assert status
    assert learner.stop() == 0
    assert any(0 < rows < DISTINCT for rows in rows_at_kill), rows_at_kill

    raw = csv_path.read_bytes()
    assert raw.startswith(HEADER) and raw.endswith(b"\n")
    ids = [StoredFeedback.from_line(line).feedback_id for line in raw.splitlines()[1:]]
    assert len(ids) == len(set(ids)) == DISTINCT
    assert set(ids) == {m.feedback_id for m in distinct}
    with csv_path.open(newline="", encoding="utf-8") as handle:
        assert all(len(record) == len(FIELDS) for record in csv.reader(handle))

    # A killed learner leaves no fit worker behind.
    orphans = set().union(*(kids for _, kids in killed))
    assert orphans, "no kill hit a learner with a fit worker"
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in orphans), timeout=20)
