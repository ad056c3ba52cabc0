"""One view of the metrics when several HTTP processes share the port.

`serve --processes N` runs N processes behind one port (SO_REUSEPORT): a scrape reaches
any one of them, and each counts only its own requests (and process 0 its worker's
outcomes). So each process publishes its cumulative totals, twice a second and at each
scrape, as a JSON file in a directory its supervisor made for this run
(`process-<index>.json`, replaced atomically), and a scrape adds up its own live totals
and every other file: any process answers with the whole service's totals and every
gauge (of one gauge set in several processes, the latest value).

Counters never go down: a process that starts again under the same index (its file is
still there) continues from its predecessor's totals, and the worker process's tallies
are added into process 0's totals as they arrive, so a worker restart loses nothing
but its last second. The others' figures are at most SHARE_SECONDS old.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from .metrics import Metrics, MetricsReport

log = logging.getLogger(__name__)

SHARE_SECONDS = 0.5
FILE_PATTERN = "process-*.json"


class MetricsShare:
    """The directory where the HTTP processes of one service publish their totals."""

    def __init__(self, directory: Path, index: int) -> None:
        self.directory = directory
        self.path = directory / f"process-{index}.json"

    def restore(self) -> MetricsReport | None:
        """The totals a previous process of this index published, if any."""
        return _read(self.path)

    def publish(self, totals: MetricsReport) -> None:
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(totals.to_json()))
        os.replace(partial, self.path)  # readers see the old file or the new, never half of one

    def peers(self) -> list[MetricsReport]:
        """The totals every other process last published."""
        reports = []
        for path in sorted(self.directory.glob(FILE_PATTERN)):
            if path != self.path:
                report = _read(path)
                if report is not None:
                    reports.append(report)
        return reports


def _read(path: Path) -> MetricsReport | None:
    try:
        return MetricsReport.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a scrape must still answer
        log.warning("metrics of %s not read: %s", path.name, exc)
        return None


def share_metrics(metrics: Metrics, directory: Path, index: int) -> MetricsShare:
    """Make `metrics` continue from its index's last published totals and add the other
    processes' totals to each scrape."""
    share = MetricsShare(directory, index)
    restored = share.restore()
    if restored is not None:
        metrics.totals.add(restored)
        log.info("metrics of process %d continue from its previous totals", index)
    metrics.peers = share.peers
    share.publish(metrics.snapshot())
    return share


async def publish_until(metrics: Metrics, share: MetricsShare, stop: asyncio.Event) -> None:
    """Publish this process's totals every SHARE_SECONDS until `stop`, then once more."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=SHARE_SECONDS)
        except TimeoutError:
            pass
        try:
            share.publish(metrics.snapshot())
        except OSError as exc:
            log.warning("metrics not published for the other processes: %s", exc)
