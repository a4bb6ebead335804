"""Review cycles in the database, for every writer: publishing a policy or SOP sets its
`next_review_date` from its `review_frequency`, and a row inserted into `reviews` records a
completed review and schedules the next one.

Everything is generated from the domain (`REVIEW_INTERVAL_MONTHS`, `EntityKind.stamps` and
`EntityKind.reviewable`), for both databases:

- **Publication.** A record entering its stamp status (`published`) gets its stamp date
  (`published_date`) set to the day unless the writer gave it in the same statement, and,
  for a type with a review cycle, `next_review_date` = that date + the frequency (an
  `as_needed` or empty frequency leaves it as it is; an insert that gives one, an import,
  keeps it). PostgreSQL: a BEFORE trigger that sets NEW, so the capture (an AFTER trigger)
  records the dates in the publication's change. SQLite: BEFORE triggers cannot change NEW,
  and an AFTER trigger's own UPDATE of the row would be captured as a second change; the
  dates are set by a trigger on the publication's change row instead, which runs inside the
  capture trigger (so SQLite, whose recursive triggers are off, does not capture the nested
  UPDATE again) and writes the dates into that change row. An insert in the stamp status
  (an import) is captured by the insert trigger, so the nested UPDATE is captured by the
  update trigger: that second row is deleted in the same statement (its id stays unused).
- **A completed review.** An INSERT into `reviews` is refused unless its record exists in
  the row's tenant, is not deleted, and stands in a reviewable status; then the database
  sets `reviews.next_review_date` and the record's `next_review_date` to the review's day
  (`reviewed_at`) + the frequency (null for `as_needed` or no frequency), and the record's
  `updated_by` to the reviewer. The record's update is captured as an `updated` change
  whose actor is `reviewed_by` (PostgreSQL: `gov.actor` for that statement only; SQLite:
  the transaction's `capture_context` row, put back as it was afterwards).

"The day" is PostgreSQL's CURRENT_DATE (the session's time zone) and SQLite's UTC date.
On PostgreSQL `gov_writer` may insert a review's own columns (`REVIEW_COLUMNS`), not its
`next_review_date`; the lookups and the record's update run as the writer, so row-level
security keeps it to its tenants.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from gov_pipeline.db.integrity import WRITER_ROLE
from gov_pipeline.domain.entities import KINDS, EntityKind
from gov_pipeline.domain.reviews import (
    FREQUENCY_FIELD,
    NEXT_REVIEW_FIELD,
    REVIEW_INTERVAL_MONTHS,
    reviewable_statuses,
    reviewable_text,
    reviewed_kinds,
)

# What another application may write into `reviews`: the review, not its schedule.
REVIEW_COLUMNS = ("tenant_id", "entity_type", "entity_id", "reviewed_by", "notes")


def _quoted(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _stamped_kinds() -> list[tuple[EntityKind, str, str]]:
    """(kind, status, date column) of each stamp: entering the status dates the column."""
    return [(k, status, column) for k in KINDS.values() for status, column in k.stamps.items()]


# -- the interval, from the one table in the domain ----------------------------------------


def next_review_sql_postgres() -> str:
    """`gov_next_review_date(day, frequency)`: day + the frequency's interval, or null."""
    cases = " ".join(
        f"WHEN '{frequency}' THEN interval '{months} months'"
        for frequency, months in REVIEW_INTERVAL_MONTHS.items()
        if months is not None
    )
    return f"""
    CREATE OR REPLACE FUNCTION gov_next_review_date(day date, frequency text) RETURNS date
    LANGUAGE sql IMMUTABLE AS $$
        SELECT (day + CASE frequency {cases} END)::date
    $$
    """


def next_review_sql_sqlite(day: str, frequency: str) -> str:
    """An SQLite expression: `day` + the interval of `frequency`, or null. SQLite carries an
    overflowing day into the next month (31 January + 1 month = 3 March); capped at the
    month's last day, it gives what PostgreSQL gives."""
    cases = " ".join(
        f"WHEN '{f}' THEN min(date({day}, '+{m} months'), "
        f"date({day}, 'start of month', '+{m + 1} months', '-1 day'))"
        for f, m in REVIEW_INTERVAL_MONTHS.items()
        if m is not None
    )
    return f"(CASE {frequency} {cases} END)"


# -- refusals, as the triggers word them and the services read them -----------------------

# Each refusal starts with "review: "; PostgreSQL's name the record, SQLite's cannot.
_REFUSAL = re.compile(
    r"review: (?:"
    r"(?P<no_cycle>.* has no review cycle|no review cycle for this entity type)"
    r"|(?P<reviewer>reviewed_by is required)"
    r"|(?P<not_found>.* not found in (?:tenant .*|the review's tenant))"
    r"|(?P<deleted>.* is deleted)"
    r"|.* is (?P<status>[a-z_]+); (?P<rule>.* reviews need status .*)"
    r")"
)


@dataclass(frozen=True)
class ReviewRefusal:
    """Why the database refused a review: `reason` (no_cycle, reviewer, not_found, deleted
    or status) and, for a status, the record's status and the rule."""

    reason: str
    status: str | None = None
    rule: str | None = None


def review_refusal(message: str) -> ReviewRefusal | None:
    """The refusal a database error message states; None: not a review refusal."""
    match = _REFUSAL.search(message)
    if match is None:
        return None
    reason = next(r for r in ("no_cycle", "reviewer", "not_found", "deleted", "status") if match[r])
    return ReviewRefusal(reason, match["status"], match["rule"])


# -- PostgreSQL -----------------------------------------------------------------------------

# str.format template: {function}, {status}, {stamp} and {schedule}.
_PG_PUBLICATION = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM '{status}' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF OLD.status = '{status}' THEN
            RETURN NEW;
        END IF;
        -- The writer did not give the date in this statement: the day.
        IF NEW.{stamp} IS NOT DISTINCT FROM OLD.{stamp} THEN
            NEW.{stamp} := NULL;
        END IF;
    END IF;
    NEW.{stamp} := coalesce(NEW.{stamp}, CURRENT_DATE);{schedule}
    RETURN NEW;
END $$
"""
_PG_SCHEDULE = """
    -- An insert (an import) that gives its next review keeps it.
    IF TG_OP = 'UPDATE' OR NEW.{next} IS NULL THEN
        NEW.{next} := coalesce(gov_next_review_date(NEW.{stamp}, NEW.{frequency}), NEW.{next});
    END IF;"""

# str.format template: {tables}, {nouns}, {reviewable}, {rules}, {types} (CASE branches and
# a list), {next}, {frequency}. Runs as the writer: row-level security applies.
_PG_REVIEW = """
CREATE OR REPLACE FUNCTION gov_complete_review() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_table text := CASE NEW.entity_type {tables} END;
    v_noun text := CASE NEW.entity_type {nouns} END;
    v_reviewable text[] := CASE NEW.entity_type {reviewable} END;
    v_rule text := CASE NEW.entity_type {rules} END;
    v_actor text := coalesce(current_setting('gov.actor', true), '');
    v_status text;
    v_frequency text;
    v_deleted timestamptz;
BEGIN
    IF v_table IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = format(
            'review: %L has no review cycle (one of: {types})', NEW.entity_type);
    END IF;
    IF coalesce(btrim(NEW.reviewed_by), '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'review: reviewed_by is required';
    END IF;
    EXECUTE format('SELECT status, {frequency}, deleted_at FROM %I '
                   'WHERE id = $1 AND tenant_id = $2 FOR UPDATE', v_table)
       INTO v_status, v_frequency, v_deleted USING NEW.entity_id, NEW.tenant_id;
    IF v_status IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', MESSAGE = format(
            'review: %s %s not found in tenant %L', v_noun, NEW.entity_id, NEW.tenant_id);
    ELSIF v_deleted IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', MESSAGE = format(
            'review: %s %s is deleted', v_noun, NEW.entity_id);
    ELSIF NOT v_status = ANY (v_reviewable) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = format(
            'review: %s %s is %s; %s', v_noun, NEW.entity_id, v_status, v_rule);
    END IF;
    NEW.{next} := gov_next_review_date(NEW.reviewed_at::date, v_frequency);
    -- The record's change is the reviewer's; the transaction's own actor comes back after.
    PERFORM set_config('gov.actor', NEW.reviewed_by, true);
    EXECUTE format('UPDATE %I SET {next} = $1, updated_by = $2 '
                   'WHERE id = $3 AND tenant_id = $4', v_table)
      USING NEW.{next}, NEW.reviewed_by, NEW.entity_id, NEW.tenant_id;
    PERFORM set_config('gov.actor', v_actor, true);
    RETURN NEW;
END $$
"""


def _pg_publication(kind: EntityKind, status: str, stamp: str) -> list[str]:
    function = f"gov_publication_{kind.entity_type}"
    schedule = (
        _PG_SCHEDULE.format(next=NEXT_REVIEW_FIELD, stamp=stamp, frequency=FREQUENCY_FIELD)
        if kind.reviewable
        else ""
    )
    return [
        _PG_PUBLICATION.format(function=function, status=status, stamp=stamp, schedule=schedule),
        f"DROP TRIGGER IF EXISTS gov_{kind.table}_publication ON {kind.table}",
        f"CREATE TRIGGER gov_{kind.table}_publication BEFORE INSERT OR UPDATE OF status "
        f"ON {kind.table} FOR EACH ROW EXECUTE FUNCTION {function}()",
    ]


def _pg_review() -> list[str]:
    kinds = reviewed_kinds()

    def branches(value: Any) -> str:
        return " ".join(f"WHEN '{k.entity_type}' THEN {value(k)}" for k in kinds)

    function = _PG_REVIEW.format(
        tables=branches(lambda k: f"'{k.table}'"),
        nouns=branches(lambda k: _quoted([k.noun])),
        reviewable=branches(lambda k: f"ARRAY[{_quoted(reviewable_statuses(k))}]"),
        rules=branches(lambda k: _quoted([reviewable_text(k)])),
        types=", ".join(str(k.entity_type) for k in kinds),
        next=NEXT_REVIEW_FIELD,
        frequency=FREQUENCY_FIELD,
    )
    return [
        function,
        "DROP TRIGGER IF EXISTS gov_reviews_complete ON reviews",
        "CREATE TRIGGER gov_reviews_complete BEFORE INSERT ON reviews "
        "FOR EACH ROW EXECUTE FUNCTION gov_complete_review()",
        f"GRANT INSERT ({', '.join(REVIEW_COLUMNS)}) ON reviews TO {WRITER_ROLE}",
        f"GRANT USAGE ON SEQUENCE reviews_id_seq TO {WRITER_ROLE}",
    ]


def postgres_ddl() -> list[str]:
    statements = [next_review_sql_postgres()]
    for kind, status, stamp in _stamped_kinds():
        statements += _pg_publication(kind, status, stamp)
    return statements + _pg_review()


def postgres_drop_ddl() -> list[str]:
    statements = [
        "DROP TRIGGER IF EXISTS gov_reviews_complete ON reviews",
        "DROP FUNCTION IF EXISTS gov_complete_review()",
        f"REVOKE INSERT ({', '.join(REVIEW_COLUMNS)}) ON reviews FROM {WRITER_ROLE}",
    ]
    for kind, _, _ in _stamped_kinds():
        statements += [
            f"DROP TRIGGER IF EXISTS gov_{kind.table}_publication ON {kind.table}",
            f"DROP FUNCTION IF EXISTS gov_publication_{kind.entity_type}()",
        ]
    return [*statements, "DROP FUNCTION IF EXISTS gov_next_review_date(date, text)"]


# -- SQLite ---------------------------------------------------------------------------------

# str.format template: {name}, {entity_type}, {status}, {body}. On the change table: it runs
# inside the capture trigger of the publication, which therefore does not fire again for the
# nested UPDATE (SQLite's recursive triggers are off), and it completes that change row.
_SQLITE_PUBLICATION = """
CREATE TRIGGER {name} AFTER INSERT ON entity_changes
WHEN NEW.entity_type = '{entity_type}'
 AND json_extract(NEW.new_values, '$.status') = '{status}'
 AND (NEW.old_values IS NULL OR json_extract(NEW.old_values, '$.status') IS NOT '{status}')
BEGIN
    {body}
END
"""


def _given(column: str) -> str:
    """The writer's statement changed `column` (so the change row names it)."""
    return f"EXISTS (SELECT 1 FROM json_each(NEW.changed_fields) WHERE value = '{column}')"


def _same(column: str) -> str:
    """The change row's old and new values of `column` are equal."""
    return f"json_extract(old_values, '$.{column}') IS json_extract(new_values, '$.{column}')"


def _sqlite_dates(kind: EntityKind, stamp: str) -> list[str]:
    """The SET clauses of the publication: the stamp to the day unless the writer gave it,
    the next review from that date (an import's own next review kept)."""
    day = f"CASE WHEN {stamp} IS NOT NULL AND {_given(stamp)} THEN {stamp} ELSE date('now') END"
    sets = [f"{stamp} = {day}"]
    if kind.reviewable:
        scheduled = next_review_sql_sqlite(day, FREQUENCY_FIELD)
        sets.append(
            f"{NEXT_REVIEW_FIELD} = CASE WHEN NEW.kind = 'created' AND {NEXT_REVIEW_FIELD} "
            f"IS NOT NULL THEN {NEXT_REVIEW_FIELD} ELSE coalesce({scheduled}, "
            f"{NEXT_REVIEW_FIELD}) END"
        )
    return sets


def _sqlite_publication_body(kind: EntityKind, stamp: str) -> str:
    """The values before, the dates, the values after; then the change row's fields limited
    to those that changed (a date the trigger changed is added to the writer's list)."""
    dated = [stamp, NEXT_REVIEW_FIELD] if kind.reviewable else [stamp]
    row = "WHERE id = CAST(NEW.entity_id AS INTEGER) AND tenant_id = NEW.tenant_id"
    paths = ", ".join(f"'$.{c}', (SELECT {c} FROM {kind.table} {row})" for c in dated)
    trimmed = {"old_values": "old_values", "new_values": "new_values"}
    changed = "changed_fields"
    for c in dated:
        for key, expression in trimmed.items():
            trimmed[key] = (
                f"CASE WHEN NOT {_given(c)} AND {_same(c)} "
                f"THEN json_remove({expression}, '$.{c}') ELSE {expression} END"
            )
        changed = (
            f"CASE WHEN NOT {_given(c)} AND NOT {_same(c)} "
            f"THEN json_insert({changed}, '$[#]', '{c}') ELSE {changed} END"
        )
    statements = [
        # json_insert keeps an old value the writer's change holds already; NULL stays NULL
        # (a created record has no old values).
        f"UPDATE entity_changes SET old_values = json_insert(old_values, {paths}) "
        "WHERE id = NEW.id;",
        f"UPDATE {kind.table} SET {', '.join(_sqlite_dates(kind, stamp))} {row};",
        # Inside an insert's capture the update's capture trigger is not on the stack: the
        # dates it recorded as a second change are in this row already.
        "DELETE FROM entity_changes WHERE NEW.kind = 'created' AND id > NEW.id AND "
        "tenant_id = NEW.tenant_id AND entity_type = NEW.entity_type AND "
        "entity_id = NEW.entity_id;",
        f"UPDATE entity_changes SET new_values = json_set(new_values, {paths}) WHERE id = NEW.id;",
        f"UPDATE entity_changes SET changed_fields = {changed}, "
        f"old_values = {trimmed['old_values']}, new_values = {trimmed['new_values']} "
        "WHERE id = NEW.id AND kind <> 'created';",
    ]
    return "\n    ".join(statements)


def _sqlite_publication(kind: EntityKind, status: str, stamp: str) -> list[str]:
    name = f"gov_{kind.table}_publication"
    return [
        f"DROP TRIGGER IF EXISTS {name}",
        _SQLITE_PUBLICATION.format(
            name=name,
            entity_type=kind.entity_type,
            status=status,
            body=_sqlite_publication_body(kind, stamp),
        ),
    ]


def _sqlite_review_checks() -> str:
    """The BEFORE INSERT trigger refusing a review of no record, a deleted one, or one in a
    status that is not reviewed (one statement per status: RAISE takes only a literal)."""
    kinds = reviewed_kinds()
    types = ", ".join(str(k.entity_type) for k in kinds)
    checks = [
        f"SELECT RAISE(ABORT, 'review: no review cycle for this entity type (one of: {types})')"
        f" WHERE NEW.entity_type IS NULL OR NEW.entity_type NOT IN "
        f"({_quoted([str(k.entity_type) for k in kinds])});",
        "SELECT RAISE(ABORT, 'review: reviewed_by is required')"
        " WHERE coalesce(trim(NEW.reviewed_by), '') = '';",
    ]
    for kind in kinds:
        record = (
            f"SELECT 1 FROM {kind.table} r WHERE r.id = NEW.entity_id "
            "AND r.tenant_id = NEW.tenant_id"
        )
        when = f"NEW.entity_type = '{kind.entity_type}' AND"
        checks += [
            f"SELECT RAISE(ABORT, 'review: {kind.noun} not found in the review''s tenant') "
            f"WHERE {when} NOT EXISTS ({record});",
            f"SELECT RAISE(ABORT, 'review: the {kind.noun} is deleted') "
            f"WHERE {when} EXISTS ({record} AND r.deleted_at IS NOT NULL);",
        ] + [
            f"SELECT RAISE(ABORT, 'review: the {kind.noun} is {status}; "
            f"{reviewable_text(kind)}') WHERE {when} EXISTS ({record} AND r.status = '{status}');"
            for status in kind.lifecycle.statuses
            if status not in kind.reviewable
        ]
    body = "\n    ".join(checks)
    return f"CREATE TRIGGER gov_reviews_check BEFORE INSERT ON reviews\nBEGIN\n    {body}\nEND"


_CONTEXT_COLUMNS = "id, actor, execution_id, chain_depth, importing, lifecycle_override"
# The review's record update is the reviewer's: the transaction's capture context (if any)
# is set aside as row 0 (the triggers read row 1 only), row 1 names the reviewer, and the
# context is put back as it was after the update.
_SQLITE_AS_REVIEWER = [
    f"INSERT INTO capture_context ({_CONTEXT_COLUMNS}) SELECT 0, actor, execution_id, "
    "chain_depth, importing, lifecycle_override FROM capture_context WHERE id = 1;",
    "DELETE FROM capture_context WHERE id = 1;",
    f"INSERT INTO capture_context ({_CONTEXT_COLUMNS}) SELECT 1, NEW.reviewed_by, "
    "execution_id, chain_depth, importing, lifecycle_override FROM capture_context WHERE id = 0;",
    f"INSERT INTO capture_context ({_CONTEXT_COLUMNS}) SELECT 1, NEW.reviewed_by, NULL, 0, 0, "
    "NULL WHERE NOT EXISTS (SELECT 1 FROM capture_context WHERE id = 1);",
]
_SQLITE_CONTEXT_BACK = [
    "DELETE FROM capture_context WHERE id = 1;",
    f"INSERT INTO capture_context ({_CONTEXT_COLUMNS}) SELECT 1, actor, execution_id, "
    "chain_depth, importing, lifecycle_override FROM capture_context WHERE id = 0;",
    "DELETE FROM capture_context WHERE id = 0;",
]


def _sqlite_review_schedule() -> str:
    """The AFTER INSERT trigger: the review's next date, then the record's, as the reviewer."""
    kinds = reviewed_kinds()
    scheduled = next_review_sql_sqlite("date(NEW.reviewed_at)", FREQUENCY_FIELD)
    branches = " ".join(
        f"WHEN '{k.entity_type}' THEN (SELECT {scheduled} FROM {k.table} "
        "WHERE id = NEW.entity_id AND tenant_id = NEW.tenant_id)"
        for k in kinds
    )
    updates = [
        f"UPDATE {k.table} SET {NEXT_REVIEW_FIELD} = (SELECT {NEXT_REVIEW_FIELD} FROM reviews "
        f"WHERE id = NEW.id), updated_by = NEW.reviewed_by WHERE NEW.entity_type = "
        f"'{k.entity_type}' AND id = NEW.entity_id AND tenant_id = NEW.tenant_id;"
        for k in kinds
    ]
    body = "\n    ".join(
        [
            f"UPDATE reviews SET {NEXT_REVIEW_FIELD} = CASE NEW.entity_type {branches} END "
            "WHERE id = NEW.id;",
            *_SQLITE_AS_REVIEWER,
            *updates,
            *_SQLITE_CONTEXT_BACK,
        ]
    )
    return f"CREATE TRIGGER gov_reviews_complete AFTER INSERT ON reviews\nBEGIN\n    {body}\nEND"


_SQLITE_REVIEW_TRIGGERS = ("gov_reviews_check", "gov_reviews_complete")


def sqlite_ddl() -> list[str]:
    statements: list[str] = []
    for kind, status, stamp in _stamped_kinds():
        statements += _sqlite_publication(kind, status, stamp)
    statements += [f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE_REVIEW_TRIGGERS]
    return [*statements, _sqlite_review_checks(), _sqlite_review_schedule()]


def sqlite_drop_ddl() -> list[str]:
    names = [f"gov_{kind.table}_publication" for kind, _, _ in _stamped_kinds()]
    return [f"DROP TRIGGER IF EXISTS {name}" for name in (*names, *_SQLITE_REVIEW_TRIGGERS)]


def install_review_cycles(bind: Any) -> None:
    """Install the publication and review triggers on `bind` (a connection), for its
    dialect; idempotent. On PostgreSQL after `install_integrity` (row-level security and
    the roles the grants name)."""
    postgres = bind.dialect.name == "postgresql"
    for statement in postgres_ddl() if postgres else sqlite_ddl():
        bind.execute(text(statement))


def uninstall_review_cycles(bind: Any) -> None:
    """Drop what `install_review_cycles` made."""
    postgres = bind.dialect.name == "postgresql"
    for statement in postgres_drop_ddl() if postgres else sqlite_drop_ddl():
        bind.execute(text(statement))
