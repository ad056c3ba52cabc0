"""The order of archive's durable steps, watched on a real archive: a day's data is on
disk before the manifest that lists it takes its name, the manifest is on disk before
its rename, and every rename (the manifest's, the day file's, a crash's leftover put in
place) is followed by an fsync of the directory before the next step relies on it.
Without a crash to show it, a missing fsync changes nothing a test could read back, so
the calls themselves are recorded."""

from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from myticket.archive.commands import archive_before
from myticket.archive.format import MANIFEST_NAME, day_file_name
from myticket.db.repository import Repository

from ..helpers import ticket_with

DAY = date(2023, 4, 5)
BEFORE = DAY + timedelta(days=1)
UTC = timezone.utc


def at(hours: int) -> datetime:
    return datetime.combine(DAY, time(hours), tzinfo=UTC)


@pytest.fixture
async def operator(database_url, db):
    repository = await Repository.connect(database_url)
    yield repository
    await repository.close()


@pytest.fixture
def durable_steps(monkeypatch, tmp_path) -> list[tuple[str, Path, Path | None]]:
    """Every os.fsync and os.replace on a path under tmp_path, in the order made:
    ("fsync", path, None) with the path the descriptor is open on, ("replace", from, to).
    The archive's modules call these through `os`, in whichever thread."""
    steps: list[tuple[str, Path, Path | None]] = []
    root = tmp_path.resolve()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)
        if path.is_relative_to(root):
            steps.append(("fsync", path, None))

    def replace(source, target, **kwargs) -> None:
        real_replace(source, target, **kwargs)
        source, target = Path(source).resolve(), Path(target).resolve()
        if target.is_relative_to(root):
            steps.append(("replace", source, target))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return steps


def position(steps: list, step: tuple) -> int:
    assert step in steps, f"{step} not among {steps}"
    return steps.index(step)


def assert_each_rename_is_made_durable(steps: list, directory: Path) -> None:
    """After each rename into `directory`, its fsync comes before the next rename (or
    before the end): the next step may rely on the name being on disk."""
    renames = [index for index, step in enumerate(steps) if step[0] == "replace"]
    for index, following in zip(renames, [*renames[1:], len(steps)]):
        assert ("fsync", directory, None) in steps[index + 1:following], (
            f"no fsync of {directory} after renaming {steps[index][1].name} to {steps[index][2].name}: {steps}"
        )


async def test_a_day_is_fsynced_before_its_manifest_which_is_fsynced_before_each_rename(
    operator, durable_steps, tmp_path
):
    directory = (tmp_path / "archive").resolve()
    await operator.store_tickets(tickets=[ticket_with(str(n), f"P{n}", "Thing", "1.00", received_at=at(n))
                                          for n in range(3)])

    [archived] = [entry for entry in await archive_before(operator, before=BEFORE, directory=directory)
                  if entry.day == DAY]

    assert archived.refused is None and archived.tickets == 3
    day_file, manifest = directory / day_file_name(DAY), directory / MANIFEST_NAME
    [day_rename] = [step for step in durable_steps if step[0] == "replace" and step[2] == day_file]
    [manifest_rename] = [step for step in durable_steps if step[0] == "replace" and step[2] == manifest]
    day_partial, manifest_partial = day_rename[1], manifest_rename[1]
    assert day_partial.parent == manifest_partial.parent == directory
    # The commit (the manifest's rename) comes only once both files' bytes are on disk,
    # and the day file takes its name only after the commit.
    assert position(durable_steps, ("fsync", day_partial, None)) < position(durable_steps, manifest_rename)
    assert position(durable_steps, ("fsync", manifest_partial, None)) < position(durable_steps, manifest_rename)
    assert position(durable_steps, manifest_rename) < position(durable_steps, day_rename)
    assert_each_rename_is_made_durable(durable_steps, directory)


async def test_a_partial_file_put_in_place_after_a_crash_is_renamed_durably(operator, durable_steps, tmp_path):
    directory = (tmp_path / "archive").resolve()
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "Thing", "1.00", received_at=at(1))])
    await archive_before(operator, before=BEFORE, directory=directory)
    # What a kill -9 between the manifest and the day file's rename leaves: the
    # manifest lists the file, which still has its partial name.
    day_file = directory / day_file_name(DAY)
    partial = directory / f".{day_file.name}.partial-999999"
    day_file.rename(partial)
    durable_steps.clear()

    await archive_before(operator, before=BEFORE, directory=directory)

    assert durable_steps[0] == ("replace", partial, day_file)  # put in place before the day is archived again
    assert_each_rename_is_made_durable(durable_steps, directory)
