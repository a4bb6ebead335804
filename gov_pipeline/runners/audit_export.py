"""The audit export: one tenant's changes, executions, action runs, decided approval steps
and decisions of a period, as JSON Lines or CSV files with a manifest and `SHA256SUMS`.

Read page by page and written as it goes (memory holds one page), into a hidden staging
directory beside the target that is renamed into place at the end: a directory under the
target's name is always a whole export, and its `SHA256SUMS` is written last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.engine import is_postgres, scope_to_tenant
from gov_pipeline.domain.audit import ExportFormat, Period, checksum_line, csv_records, json_line
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.services.audit import KINDS, ExportKind, read_page, stream_rows
from gov_pipeline.services.tenants import require_tenant

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
PAGE_SIZE = 1000
# A long export reports every this many rows of a kind, or this often, whichever comes first.
PROGRESS_ROWS = 5000
PROGRESS_SECONDS = 5.0
SNAPSHOT = "snapshot"  # PostgreSQL: one repeatable-read transaction, every file one moment
PER_PAGE = "per_page"  # SQLite: a transaction per page


@dataclass(frozen=True)
class ExportProgress:
    """Where an export stands: `rows` of `kind` written so far (`done`: all of them)."""

    kind: str
    rows: int
    done: bool
    total_rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ExportReport:
    out: Path
    fmt: ExportFormat
    counts: dict[str, int]
    files: list[str]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


# The pages of one kind's rows, in id order.
PageReader = Callable[[ExportKind, int], Iterator[list[dict[str, Any]]]]


@dataclass
class _Progress:
    """Calls back when a kind is done, and within a kind every `every_rows` rows or
    `every_s` seconds, whichever comes first."""

    callback: Callable[[ExportProgress], None] | None
    every_rows: int
    every_s: float
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    total: int = 0
    _last_rows: int = field(default=0, repr=False)
    _last_at: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.started = self._last_at = self.clock()

    def wrote(self, kind: str, rows: int, added: int) -> None:
        self.total += added
        now = self.clock()
        if rows - self._last_rows >= self.every_rows or now - self._last_at >= self.every_s:
            self._emit(kind, rows, done=False, now=now)

    def finished(self, kind: str, rows: int) -> None:
        log.info("audit export: %s: %s row(s) written", kind, rows)
        self._emit(kind, rows, done=True, now=self.clock())
        self._last_rows = 0

    def _emit(self, kind: str, rows: int, *, done: bool, now: float) -> None:
        self._last_rows, self._last_at = rows, now
        if self.callback is not None:
            self.callback(ExportProgress(kind, rows, done, self.total, now - self.started))


@contextmanager
def _page_reader(
    sessions: sessionmaker[Session], tenant_id: str, period: Period
) -> Iterator[tuple[PageReader, str]]:
    """A reader of the tenant's rows of `period`, and how consistent its files are.

    PostgreSQL: one read-only REPEATABLE READ transaction for the whole export, so all the
    files show one snapshot, each kind one query through a server-side cursor. SQLite: our
    transactions take its write lock (db/engine.py), so each page is read in a short
    transaction of its own (keyset on id) and writers wait a page, not an export.
    """
    with sessions() as probe:
        postgres = is_postgres(probe)
    if not postgres:

        def per_page(kind: ExportKind, page_size: int) -> Iterator[list[dict[str, Any]]]:
            after = 0
            while True:
                with sessions.begin() as session:
                    page = read_page(session, kind, tenant_id=tenant_id, period=period,
                                     after_id=after, limit=page_size)  # fmt: skip
                if page:
                    yield page
                    after = int(page[-1]["id"])
                if len(page) < page_size:
                    return

        yield per_page, PER_PAGE
        return
    with sessions.begin() as session:
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        session.connection(execution_options=options)
        scope_to_tenant(session, tenant_id)

        def in_snapshot(kind: ExportKind, page_size: int) -> Iterator[list[dict[str, Any]]]:
            return stream_rows(session, kind, tenant_id=tenant_id, period=period,
                               page_size=page_size)  # fmt: skip

        yield in_snapshot, SNAPSHOT


def check_target(out: Path, force: bool) -> Path:
    """The absolute export directory, once it may be written.

    Raises:
        InvalidInputError: `out` is a file; or a non-empty directory, without `force`, or
            with `force` but holding no earlier export (no manifest.json): `--force`
            replaces an export, never anything else.
    """
    target = out.expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise InvalidInputError("--out", f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise InvalidInputError(
                "--out", f"{target} is not empty: name a new directory, or pass --force to "
                "replace the earlier export in it",
            )  # fmt: skip
        if not (target / MANIFEST).is_file():
            raise InvalidInputError(
                "--out", f"{target} is not empty and holds no audit export ({MANIFEST}): "
                "--force replaces only an earlier export",
            )  # fmt: skip
    return target


def _write_kind(
    read: PageReader, kind: ExportKind, fmt: ExportFormat, path: Path, page_size: int,
    progress: _Progress,
) -> tuple[int, str]:  # fmt: skip
    """Write every row of `kind` to `path`, page by page; (rows, SHA-256 hex digest)."""
    digest = hashlib.sha256()
    rows = 0
    with path.open("wb") as handle:

        def put(text: str) -> None:
            data = text.encode("utf-8")
            digest.update(data)
            handle.write(data)

        if fmt is ExportFormat.CSV:
            put(csv_records([{c: c for c in kind.columns}], kind.columns))
        for page in read(kind, page_size):
            put(csv_records(page, kind.columns) if fmt is ExportFormat.CSV
                else "".join(json_line(row) for row in page))  # fmt: skip
            rows += len(page)
            progress.wrote(kind.name, rows, len(page))
        handle.flush()
        os.fsync(handle.fileno())
    progress.finished(kind.name, rows)
    return rows, digest.hexdigest()


def _write_text(path: Path, text: str) -> str:
    data = text.encode("utf-8")
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def _manifest(
    tenant_id: str, period: Period, fmt: ExportFormat, generated_at: datetime,
    consistency: str, counts: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    return {
        "export": "gov_pipeline audit export",
        "version": 1,
        "tenant_id": tenant_id,
        "from": period.start.isoformat(),
        "to": period.end.isoformat(),
        "period": "[from, to): from included, to excluded",
        "format": str(fmt),
        "generated_at": generated_at.isoformat(),
        "consistency": consistency,
        "counts": counts,
        "files": [
            {
                "kind": k.name,
                "file": f"{k.name}.{fmt}",
                "table": k.table,
                "rows": counts[k.name],
                "selected_by": k.selected_by,
                "columns": list(k.columns),
            }
            for k in KINDS
        ],
    }


def _put_in_place(staging: Path, target: Path) -> None:
    """Rename the finished staging directory to `target`; an earlier export there (checked by
    `check_target`) is moved aside first and removed after."""
    if target.is_dir() and any(target.iterdir()):
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(staging, target)  # an empty directory is replaced (POSIX rename)


def _format(fmt: ExportFormat | str) -> ExportFormat:
    try:
        return ExportFormat(fmt)
    except ValueError:
        choices = ", ".join(ExportFormat)
        raise InvalidInputError("--format", f"unknown format {fmt!r} (one of: {choices})") from None


def _write_files(
    read: PageReader, fmt: ExportFormat, staging: Path, page_size: int, progress: _Progress
) -> tuple[dict[str, int], list[str]]:
    """Write the file of each kind; (rows by kind, their SHA256SUMS lines)."""
    counts, sums = {}, []
    for kind in KINDS:
        name = f"{kind.name}.{fmt}"
        counts[kind.name], digest = _write_kind(
            read, kind, fmt, staging / name, page_size, progress
        )
        sums.append(checksum_line(digest, name))
    return counts, sums


def export_audit(
    sessions: sessionmaker[Session],
    *,
    tenant_id: str,
    period: Period,
    out: Path,
    fmt: ExportFormat | str = ExportFormat.JSONL,
    force: bool = False,
    page_size: int = PAGE_SIZE,
    on_progress: Callable[[ExportProgress], None] | None = None,
    progress_rows: int = PROGRESS_ROWS,
    progress_seconds: float = PROGRESS_SECONDS,
) -> ExportReport:
    """Export the tenant's records of `period` to the directory `out`.

    One file per kind (services/audit.py `KINDS`: changes, executions, action_runs,
    approvals, decisions), `manifest.json`, and `SHA256SUMS` covering both
    (`sha256sum -c SHA256SUMS` verifies them).

    Args:
        fmt: `jsonl` (one JSON object a line) or `csv` (a header row, then RFC 4180 rows).
        force: replace an earlier export in `out`.
        on_progress: called after each kind, and during one every `progress_rows` rows or
            `progress_seconds` seconds.

    Raises:
        InvalidInputError: an unknown format, `page_size` < 1, or `out` refused (see
            `check_target`).
        NotFoundError: no such tenant.
    """
    started, generated_at = time.perf_counter(), datetime.now(UTC)
    fmt = _format(fmt)
    if page_size < 1:
        raise InvalidInputError("page_size", "must be >= 1")
    target = check_target(out, force)
    with sessions.begin() as session:
        require_tenant(session, tenant_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    progress = _Progress(on_progress, max(1, progress_rows), progress_seconds)
    try:
        with _page_reader(sessions, tenant_id, period) as (read, consistency):
            counts, sums = _write_files(read, fmt, staging, page_size, progress)
        manifest = _manifest(tenant_id, period, fmt, generated_at, consistency, counts)
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        sums.append(checksum_line(_write_text(staging / MANIFEST, text), MANIFEST))
        _write_text(staging / SUMS, "".join(sums))  # last: its presence means complete
        _put_in_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [*(f"{k.name}.{fmt}" for k in KINDS), MANIFEST, SUMS]
    seconds = time.perf_counter() - started
    rows = sum(counts.values())
    log.info("audit export of %s to %s: %s row(s) in %.2fs", tenant_id, target, rows, seconds)
    return ExportReport(target, fmt, counts, files, seconds)
