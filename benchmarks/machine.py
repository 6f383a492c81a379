"""A description of the machine a benchmark ran on, recorded with its results."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime


def machine() -> dict[str, str | int | float]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def command() -> str:
    return " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
