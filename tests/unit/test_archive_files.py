"""The one check of an archive file against the digest its manifest lists, shared by
archive (a partial file to put in place, a day file to merge into), purge and restore:
what it reports, and that it reads a file only when the manifest lists one."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from myticket.archive.files import Mismatch, check_listed, listed_digest
from myticket.archive.format import DayEntry, merged_manifest

CONTENT = b"\x1f\x8b some archived bytes"
DIGEST = hashlib.sha256(CONTENT).hexdigest()


def manifest_listing(file_name: str, sha256: str) -> dict:
    entry = DayEntry(file=file_name, tickets=1, statuses={"processed": 1}, bytes=len(CONTENT), sha256=sha256,
                     archived_at="2026-01-02T00:00:00+00:00")
    return merged_manifest(None, date(2026, 1, 1), entry)


def test_a_listed_file_with_its_digest_passes_and_a_changed_one_is_named_changed(tmp_path):
    path = tmp_path / "tickets-2026-01-01.jsonl.gz"
    path.write_bytes(CONTENT)
    manifest = manifest_listing(path.name, DIGEST)

    assert check_listed(path, listed_digest(manifest, path.name)) is None
    path.write_bytes(CONTENT + b"\n")
    assert check_listed(path, listed_digest(manifest, path.name)) is Mismatch.CHANGED


def test_no_manifest_or_no_entry_is_not_listed_without_reading_the_file(tmp_path):
    missing = tmp_path / "tickets-2026-01-01.jsonl.gz"  # never written: reading it would raise

    assert listed_digest(None, missing.name) is None
    assert check_listed(missing, listed_digest(None, missing.name)) is Mismatch.NOT_LISTED
    other = manifest_listing("tickets-2025-12-31.jsonl.gz", DIGEST)
    assert check_listed(missing, listed_digest(other, missing.name)) is Mismatch.NOT_LISTED


def test_a_listed_file_that_is_gone_raises_for_the_caller_to_name(tmp_path):
    missing = tmp_path / "tickets-2026-01-01.jsonl.gz"

    with pytest.raises(FileNotFoundError):
        check_listed(missing, DIGEST)
