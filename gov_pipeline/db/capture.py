"""Change capture inside the database: triggers on every governed entity table write
`entity_changes`, and a trigger on `approval_decisions` records each decision as an
`approval_decided` change.

Any writer is covered (our services, another application, psql). The actor and the causing
execution come from a transaction-local context: `set_config('gov.*', ..., true)` on
PostgreSQL, a `capture_context` row (deleted before commit) on SQLite.

Revisions 0001 to 0004 captured policies only, with a function of their own
(`postgres_ddl`); revision 0005 on uses one function for every table (`governed_ddl`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, event, text
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.integrity import APP_ROLE
from gov_pipeline.db.models import CaptureContext

# Fields whose change alone is not a change of the entity.
IGNORED_FIELDS = ("updated_at", "updated_by")
# A policy's fields always present in old/new values, as the original sent them (other
# entity types: `EntityKind.always`).
ALWAYS_FIELDS = ("status", "policy_type")

# The policy columns at the revision that installs the SQLite triggers, with their JSON
# shape: plain values, JSON documents (embedded as JSON) and booleans (true/false).
SQLITE_POLICY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "plain"), ("tenant_id", "plain"), ("title", "plain"), ("policy_type", "plain"),
    ("content", "plain"), ("purpose", "plain"), ("scope", "plain"), ("owner_id", "plain"),
    ("business_units", "json"), ("status", "plain"), ("version", "plain"),
    ("version_number", "plain"), ("effective_date", "plain"), ("review_frequency", "plain"),
    ("next_review_date", "plain"), ("published_date", "plain"),
    ("parent_policy_id", "plain"), ("tags", "json"), ("custom_fields", "json"),
    ("requires_acknowledgment", "bool"), ("created_by", "plain"), ("updated_by", "plain"),
    ("created_at", "plain"), ("updated_at", "plain"), ("deleted_at", "plain"),
)  # fmt: skip


# Every id is drawn by a transaction that already has an xid, so a gap seen by the
# reader belongs to a transaction older than that read's snapshot xmax.
_PG_NEXT_CHANGE_ID = """
    CREATE OR REPLACE FUNCTION gov_next_change_id() RETURNS bigint
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        PERFORM pg_current_xact_id();
        RETURN nextval('entity_changes_id_seq');
    END $$
    """

# str.format template: {definer}, {ignored} and {always} (SQL arrays of field names),
# {override_column} and {override_value}.
_PG_CAPTURE_FUNCTION = """
    CREATE OR REPLACE FUNCTION gov_capture_policy_change() RETURNS trigger
    LANGUAGE plpgsql {definer} AS $$
    DECLARE
        old_row jsonb;
        new_row jsonb;
        changed text[];
        change_kind text;
        keep text[];
        v_actor text := nullif(current_setting('gov.actor', true), '');
        v_execution bigint := nullif(current_setting('gov.execution_id', true), '')::bigint;
        v_depth int := coalesce(nullif(current_setting('gov.chain_depth', true), '')::int, 0);
        v_row policies%ROWTYPE;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            new_row := to_jsonb(NEW);
            v_row := NEW;
            change_kind := 'created';
            SELECT array_agg(k ORDER BY k) INTO changed FROM jsonb_object_keys(new_row) AS k;
        ELSIF TG_OP = 'UPDATE' THEN
            old_row := to_jsonb(OLD);
            new_row := to_jsonb(NEW);
            v_row := NEW;
            SELECT array_agg(n.key ORDER BY n.key) INTO changed
              FROM jsonb_each(new_row) AS n
             WHERE n.value IS DISTINCT FROM old_row -> n.key
               AND n.key <> ALL (ARRAY{ignored}::text[]);
            IF changed IS NULL THEN
                RETURN NULL;
            END IF;
            IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
                change_kind := 'deleted';
            ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
                change_kind := 'status_changed';
            ELSE
                change_kind := 'updated';
            END IF;
            keep := changed || ARRAY{always}::text[];
            SELECT jsonb_object_agg(key, value) INTO old_row
              FROM jsonb_each(old_row) WHERE key = ANY (keep);
            SELECT jsonb_object_agg(key, value) INTO new_row
              FROM jsonb_each(new_row) WHERE key = ANY (keep);
        ELSE
            old_row := to_jsonb(OLD);
            v_row := OLD;
            change_kind := 'deleted';
            changed := ARRAY['deleted_at'];
        END IF;
        INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, old_values,
                                    new_values, changed_fields, actor,
                                    caused_by_execution_id, chain_depth, created_at
                                    {override_column})
        VALUES (v_row.tenant_id, 'policy', v_row.id::text, change_kind, old_row, new_row,
                to_jsonb(coalesce(changed, ARRAY[]::text[])), v_actor, v_execution, v_depth,
                clock_timestamp() {override_value});
        RETURN NULL;
    END $$
    """

_PG_CAPTURE_TRIGGER = """
    CREATE TRIGGER gov_policies_capture
    AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION gov_capture_policy_change()
    """


def postgres_ddl(*, override: bool = True) -> list[str]:
    """The PostgreSQL capture DDL; `override` (revision 0004 on) records a lifecycle override
    and runs the capture as its owner (SECURITY DEFINER), so that writers need no right on
    the change table and cannot forge change rows."""
    capture_function = _PG_CAPTURE_FUNCTION.format(
        definer="SECURITY DEFINER SET search_path FROM CURRENT" if override else "",
        ignored=repr(list(IGNORED_FIELDS)),
        always=repr(list(ALWAYS_FIELDS)),
        override_column=", lifecycle_override" if override else "",
        override_value=(
            ", nullif(current_setting('gov.lifecycle_override', true), '')" if override else ""
        ),
    )
    return [
        _PG_NEXT_CHANGE_ID,
        "ALTER TABLE entity_changes ALTER COLUMN id SET DEFAULT gov_next_change_id()",
        "ALTER TABLE entity_changes ALTER COLUMN txid"
        " SET DEFAULT (pg_current_xact_id()::text)::bigint",
        capture_function,
        "DROP TRIGGER IF EXISTS gov_policies_capture ON policies",
        _PG_CAPTURE_TRIGGER,
    ]


POSTGRES_DROP_DDL = [
    "DROP TRIGGER IF EXISTS gov_policies_capture ON policies",
    "DROP FUNCTION IF EXISTS gov_capture_policy_change()",
    "ALTER TABLE entity_changes ALTER COLUMN id SET DEFAULT nextval('entity_changes_id_seq')",
    "DROP FUNCTION IF EXISTS gov_next_change_id()",
]


def sqlite_drop_ddl(table: str = "policies") -> list[str]:
    return [f"DROP TRIGGER IF EXISTS gov_{table}_capture_{op}" for op in _OPERATIONS]


_OPERATIONS = ("insert", "update", "delete")
SQLITE_DROP_DDL = sqlite_drop_ddl()

# str.format templates of the SQLite triggers; the fields are built by `sqlite_ddl`.
_SQLITE_INSERT_TRIGGER = """
        CREATE TRIGGER gov_{table}_capture_insert AFTER INSERT ON {table}
        BEGIN
            {insert_columns}
            VALUES (NEW.tenant_id, '{entity_type}', CAST(NEW.id AS TEXT), 'created', NULL,
                    {new_object}, {all_names}, {context}, {now});
        END
        """
_SQLITE_UPDATE_TRIGGER = """
        CREATE TRIGGER gov_{table}_capture_update AFTER UPDATE ON {table}
        WHEN {any_changed}
        BEGIN
            {insert_columns}
            VALUES (NEW.tenant_id, '{entity_type}', CAST(NEW.id AS TEXT),
                    CASE WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN 'deleted'
                         WHEN OLD.status IS NOT NEW.status THEN 'status_changed'
                         ELSE 'updated' END,
                    {old_filtered}, {new_filtered}, {changed_list}, {context}, {now});
        END
        """
_SQLITE_DELETE_TRIGGER = """
        CREATE TRIGGER gov_{table}_capture_delete AFTER DELETE ON {table}
        BEGIN
            {insert_columns}
            VALUES (OLD.tenant_id, '{entity_type}', CAST(OLD.id AS TEXT), 'deleted',
                    {old_object}, NULL, json_array('deleted_at'),
                    {context}, {now});
        END
        """
# One column of the transaction's capture context.
_SQLITE_CONTEXT = "(SELECT {col} FROM capture_context WHERE id = 1)"


def _sqlite_value(row: str, column: str, shape: str) -> str:
    ref = f"{row}.{column}"
    if shape == "json":
        return f"json({ref})"
    if shape == "bool":
        return (
            f"CASE WHEN {ref} IS NULL THEN NULL WHEN {ref} THEN json('true') ELSE json('false') END"
        )
    return ref


def _sqlite_object(row: str, columns: tuple[tuple[str, str], ...]) -> str:
    pairs = ", ".join(f"'{c}', {_sqlite_value(row, c, s)}" for c, s in columns)
    return f"json_object({pairs})"


def _sqlite_changed_list(tracked: list[tuple[str, str]]) -> str:
    """A JSON array of the names of the `tracked` columns that differ between OLD and NEW."""
    return (
        "(SELECT json_group_array(value) FROM json_each(json_array("
        + ", ".join(f"CASE WHEN OLD.{c} IS NOT NEW.{c} THEN '{c}' END" for c, _ in tracked)
        + ")) WHERE value IS NOT NULL)"
    )


def _sqlite_filtered(row: str, columns: tuple[tuple[str, str], ...], keep: str) -> str:
    """The JSON object of `row` limited to the names `keep` selects."""
    return (
        # json_each turns JSON true/false into 1/0; `type` keeps what they were.
        "(SELECT json_group_object(key, CASE type WHEN 'true' THEN json('true')"
        " WHEN 'false' THEN json('false') ELSE value END)"
        f" FROM json_each({_sqlite_object(row, columns)})"
        f" WHERE key IN {keep})"
    )


def _sqlite_insert_columns(override: bool) -> str:
    return (
        "INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, old_values, "
        "new_values, changed_fields, actor, caused_by_execution_id, chain_depth, created_at"
        + (", lifecycle_override)" if override else ")")
    )


def _sqlite_context_values(override: bool) -> tuple[str, str]:
    """The actor, execution and depth values; and the timestamp (with the override)."""
    context = ", ".join(
        [_SQLITE_CONTEXT.format(col="actor"), _SQLITE_CONTEXT.format(col="execution_id"),
         f"coalesce({_SQLITE_CONTEXT.format(col='chain_depth')}, 0)"]
    )  # fmt: skip
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    if override:
        now += ", " + _SQLITE_CONTEXT.format(col="lifecycle_override")
    return context, now


def sqlite_ddl(
    columns: tuple[tuple[str, str], ...] = SQLITE_POLICY_COLUMNS,
    *,
    override: bool = True,
    table: str = "policies",
    entity_type: str = "policy",
    always: tuple[str, ...] = ALWAYS_FIELDS,
) -> list[str]:
    """The SQLite triggers for the table of `entity_type` with `columns` (name, JSON shape),
    whose changes always carry the `always` fields; `override` (revision 0004 on) records a
    lifecycle override set in `capture_context`."""
    tracked = [(c, s) for c, s in columns if c not in IGNORED_FIELDS]
    changed_list = _sqlite_changed_list(tracked)
    always_sql = " ".join(f"UNION SELECT '{name}'" for name in always)
    keep = f"(SELECT value FROM json_each({changed_list}) {always_sql})"
    context, now = _sqlite_context_values(override)
    fields = {
        "table": table,
        "entity_type": entity_type,
        "insert_columns": _sqlite_insert_columns(override),
        "context": context,
        "now": now,
        "new_object": _sqlite_object("NEW", columns),
        "old_object": _sqlite_object("OLD", columns),
        "all_names": "json_array(" + ", ".join(f"'{c}'" for c, _ in columns) + ")",
        "any_changed": " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c, _ in tracked),
        "old_filtered": _sqlite_filtered("OLD", columns, keep),
        "new_filtered": _sqlite_filtered("NEW", columns, keep),
        "changed_list": changed_list,
    }
    return [
        *sqlite_drop_ddl(table),
        _SQLITE_INSERT_TRIGGER.format(**fields),
        _SQLITE_UPDATE_TRIGGER.format(**fields),
        _SQLITE_DELETE_TRIGGER.format(**fields),
    ]


def set_change_context(
    session: Session,
    *,
    actor: str | None = None,
    execution_id: int | None = None,
    chain_depth: int = 0,
    importing: bool = False,
    lifecycle_override: str | None = None,
) -> None:
    """Tell the capture and lifecycle triggers who writes in the current transaction.

    Args:
        session: the caller's session; the context lasts until its transaction ends.
        actor: the user (or `system:<component>`) making the change.
        execution_id: the workflow execution whose action makes the change, if any.
        chain_depth: how many executions led to this change (0 for a human change).
        importing: new rows may start in any status of their lifecycle (an import).
        lifecycle_override: data repair: the reason the lifecycle is not enforced in this
            transaction; recorded on every change it makes.
    """
    if is_postgres(session):
        session.execute(
            text(
                "SELECT set_config('gov.actor', :actor, true),"
                " set_config('gov.execution_id', :execution, true),"
                " set_config('gov.chain_depth', :depth, true),"
                " set_config('gov.importing', :importing, true),"
                " set_config('gov.lifecycle_override', :override, true)"
            ),
            {
                "actor": actor or "",
                "execution": "" if execution_id is None else str(execution_id),
                "depth": str(chain_depth),
                "importing": "on" if importing else "",
                "override": lifecycle_override or "",
            },
        )
        return
    session.merge(
        CaptureContext(
            id=1, actor=actor, execution_id=execution_id, chain_depth=chain_depth,
            importing=importing, lifecycle_override=lifecycle_override,
        )
    )  # fmt: skip
    session.flush()
    session.info["gov_capture_context"] = True


@event.listens_for(Session, "before_commit")
def _clear_sqlite_context(session: Session) -> None:
    # The SQLite context row must never outlive the transaction that set it: a later
    # writer (say, the sqlite3 shell) would otherwise be recorded under our actor. The event
    # fires for a savepoint's release too, where the transaction (and its context) go on.
    if session.in_nested_transaction():
        return
    if session.info.pop("gov_capture_context", False):
        session.execute(delete(CaptureContext))


def install_capture(bind: Any, *, override: bool = True) -> None:
    """Install the triggers on `bind` (a connection), for its dialect (`override`: the
    revision 0004 form, see `postgres_ddl`)."""
    postgres = bind.dialect.name == "postgresql"
    statements = postgres_ddl(override=override) if postgres else sqlite_ddl(override=override)
    for statement in statements:
        bind.execute(text(statement))


def uninstall_capture(bind: Any) -> None:
    statements = POSTGRES_DROP_DDL if bind.dialect.name == "postgresql" else SQLITE_DROP_DDL
    for statement in statements:
        bind.execute(text(statement))


# -- revision 0005 on: every governed table, and decisions ----------------------------------

# One function for every governed table: TG_ARGV[0] is the entity type, TG_ARGV[1] the
# fields its changes always carry (comma-separated). It runs as its owner (see
# `postgres_ddl`); str.format template: {ignored} and {row_execution} (revision 0008 on,
# `_PG_ROW_EXECUTION`; empty before).
_PG_GOVERNED_FUNCTION = """
    CREATE OR REPLACE FUNCTION gov_capture_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    DECLARE
        old_row jsonb;
        new_row jsonb;
        v_row jsonb;
        changed text[];
        change_kind text;
        keep text[];
        v_always text[] := string_to_array(TG_ARGV[1], ',');
        v_actor text := nullif(current_setting('gov.actor', true), '');
        v_execution bigint := nullif(current_setting('gov.execution_id', true), '')::bigint;
        v_depth int := coalesce(nullif(current_setting('gov.chain_depth', true), '')::int, 0);
        v_row_depth int;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            new_row := to_jsonb(NEW);
            v_row := new_row;
            change_kind := 'created';
            SELECT array_agg(k ORDER BY k) INTO changed FROM jsonb_object_keys(new_row) AS k;
            {row_execution}
        ELSIF TG_OP = 'UPDATE' THEN
            old_row := to_jsonb(OLD);
            new_row := to_jsonb(NEW);
            v_row := new_row;
            SELECT array_agg(n.key ORDER BY n.key) INTO changed
              FROM jsonb_each(new_row) AS n
             WHERE n.value IS DISTINCT FROM old_row -> n.key
               AND n.key <> ALL (ARRAY{ignored}::text[]);
            IF changed IS NULL THEN
                RETURN NULL;
            END IF;
            IF old_row ->> 'deleted_at' IS NULL AND new_row ->> 'deleted_at' IS NOT NULL THEN
                change_kind := 'deleted';
            ELSIF old_row -> 'status' IS DISTINCT FROM new_row -> 'status' THEN
                change_kind := 'status_changed';
            ELSE
                change_kind := 'updated';
            END IF;
            keep := changed || v_always;
            SELECT jsonb_object_agg(key, value) INTO old_row
              FROM jsonb_each(old_row) WHERE key = ANY (keep);
            SELECT jsonb_object_agg(key, value) INTO new_row
              FROM jsonb_each(new_row) WHERE key = ANY (keep);
        ELSE
            old_row := to_jsonb(OLD);
            v_row := old_row;
            change_kind := 'deleted';
            changed := ARRAY['deleted_at'];
        END IF;
        INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, old_values,
                                    new_values, changed_fields, actor,
                                    caused_by_execution_id, chain_depth, created_at,
                                    lifecycle_override)
        VALUES (v_row ->> 'tenant_id', TG_ARGV[0], v_row ->> 'id', change_kind, old_row,
                new_row, to_jsonb(coalesce(changed, ARRAY[]::text[])), v_actor, v_execution,
                v_depth, clock_timestamp(),
                nullif(current_setting('gov.lifecycle_override', true), ''));
        RETURN NULL;
    END $$
    """

# Revision 0008: a row an action creates names its execution and action run (a task's
# `execution_id`, `action_run_id`); its change is that execution's, one level deeper, and
# its actor the row's `created_by`, whatever the transaction's settings say. A chunk writes
# the rows of many executions with one multi-row INSERT, which settings cannot vary per
# row. Only gov_pipeline's own processes (the login of a member of gov_app, as for the
# reserved settings) are believed, and an execution of another tenant does not count: the
# settings apply then.
_PG_ROW_EXECUTION = f"""
            IF new_row ->> 'action_run_id' IS NOT NULL
               AND new_row ->> 'execution_id' IS NOT NULL
               AND pg_has_role(session_user, '{APP_ROLE}', 'MEMBER') THEN
                SELECT e.chain_depth INTO v_row_depth FROM workflow_executions e
                 WHERE e.id = (new_row ->> 'execution_id')::bigint
                   AND e.tenant_id = new_row ->> 'tenant_id';
                IF FOUND THEN
                    v_execution := (new_row ->> 'execution_id')::bigint;
                    v_depth := v_row_depth + 1;
                    v_actor := coalesce(new_row ->> 'created_by', v_actor);
                END IF;
            END IF;"""


def governed_function_ddl(*, row_execution: bool) -> str:
    """`gov_capture_change()` as revision 0005 made it (`row_execution` False) or as 0008
    does (True)."""
    return _PG_GOVERNED_FUNCTION.format(
        ignored=repr(list(IGNORED_FIELDS)),
        row_execution=_PG_ROW_EXECUTION if row_execution else "",
    )


# A decision becomes an `approval_decided` change about the approval's entity. The approval
# is looked up in the decision's own tenant only: a decision naming another tenant's
# approval learns nothing of it (the change is then about `approval <id>`, and processing
# refuses it). The change id is written back on the decision row.
_PG_DECISION_FUNCTION = """
    CREATE OR REPLACE FUNCTION gov_capture_decision() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    DECLARE
        a approvals%ROWTYPE;
        v_depth int;
        v_change bigint;
    BEGIN
        SELECT * INTO a FROM approvals
         WHERE id = NEW.approval_id AND tenant_id = NEW.tenant_id;
        SELECT chain_depth INTO v_depth FROM workflow_executions WHERE id = a.execution_id;
        INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, old_values,
                                    new_values, changed_fields, actor,
                                    caused_by_execution_id, chain_depth, created_at)
        VALUES (NEW.tenant_id, coalesce(a.entity_type, 'approval'),
                coalesce(a.entity_id, NEW.approval_id::text), 'approval_decided',
                jsonb_build_object('approval_status', a.status),
                jsonb_build_object(
                    'decision_id', NEW.id, 'approval_id', NEW.approval_id,
                    'execution_id', a.execution_id, 'step_index', a.step_index,
                    'approval_status', {decided_status}, 'decision', NEW.decision,
                    'decided_by', NEW.decided_by),
                '["approval_status"]'::jsonb, NEW.decided_by, a.execution_id,
                coalesce(v_depth, 0), clock_timestamp())
        RETURNING id INTO v_change;
        UPDATE approval_decisions SET change_id = v_change WHERE id = NEW.id;
        RETURN NULL;
    END $$
    """

# The approval status a decision gives (services/approvals.py DECISIONS).
_DECIDED_STATUS = (
    "CASE NEW.decision WHEN 'approve' THEN 'approved' WHEN 'reject' THEN 'rejected'"
    " ELSE 'changes_requested' END"
)

_SQLITE_DECISION_TRIGGER = """
    CREATE TRIGGER gov_approval_decisions_capture AFTER INSERT ON approval_decisions
    BEGIN
        INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, old_values,
                                    new_values, changed_fields, actor,
                                    caused_by_execution_id, chain_depth, created_at)
        SELECT NEW.tenant_id, coalesce(a.entity_type, 'approval'),
               coalesce(a.entity_id, CAST(NEW.approval_id AS TEXT)), 'approval_decided',
               json_object('approval_status', a.status),
               json_object(
                   'decision_id', NEW.id, 'approval_id', NEW.approval_id,
                   'execution_id', a.execution_id, 'step_index', a.step_index,
                   'approval_status', {decided_status}, 'decision', NEW.decision,
                   'decided_by', NEW.decided_by),
               json_array('approval_status'), NEW.decided_by, a.execution_id,
               coalesce(e.chain_depth, 0), strftime('%Y-%m-%d %H:%M:%f', 'now')
          FROM (SELECT 1) AS one
          LEFT JOIN approvals AS a ON a.id = NEW.approval_id AND a.tenant_id = NEW.tenant_id
          LEFT JOIN workflow_executions AS e ON e.id = a.execution_id;
        UPDATE approval_decisions SET change_id = last_insert_rowid() WHERE id = NEW.id;
    END
    """


@dataclass(frozen=True)
class CapturedTable:
    """A governed table as a revision captures it: its entity type and always-fields."""

    table: str
    entity_type: str
    always: tuple[str, ...]


def sqlite_columns(bind: Any, table: str) -> tuple[tuple[str, str], ...]:
    """The columns of `table` as they are now (generated ones included), with the JSON
    shape of each: a revision's triggers list the columns of the table at that revision."""
    shapes = {"JSON": "json", "BOOLEAN": "bool"}
    rows = bind.execute(text(f"PRAGMA table_xinfo({table})")).all()
    # hidden: 0 a column, 1 a virtual table's hidden column, 2 and 3 generated columns.
    return tuple((str(r[1]), shapes.get(str(r[2]).upper(), "plain")) for r in rows if r[6] != 1)


def governed_ddl(bind: Any, tables: Sequence[CapturedTable]) -> list[str]:
    """The capture DDL of revision 0005, for `tables` and for decisions (0008 replaces the
    function, see `governed_function_ddl`)."""
    if bind.dialect.name != "postgresql":
        statements: list[str] = []
        for t in tables:
            statements += sqlite_ddl(
                sqlite_columns(bind, t.table), table=t.table, entity_type=t.entity_type,
                always=t.always,
            )  # fmt: skip
        return [
            *statements,
            "DROP TRIGGER IF EXISTS gov_approval_decisions_capture",
            _SQLITE_DECISION_TRIGGER.format(decided_status=_DECIDED_STATUS),
        ]
    statements = [
        governed_function_ddl(row_execution=False),
        _PG_DECISION_FUNCTION.format(decided_status=_DECIDED_STATUS),
    ]
    for t in tables:
        statements += [
            f"DROP TRIGGER IF EXISTS gov_{t.table}_capture ON {t.table}",
            f"CREATE TRIGGER gov_{t.table}_capture AFTER INSERT OR UPDATE OR DELETE ON "
            f"{t.table} FOR EACH ROW EXECUTE FUNCTION gov_capture_change"
            f"('{t.entity_type}', '{','.join(t.always)}')",
        ]
    return [
        *statements,
        "DROP FUNCTION IF EXISTS gov_capture_policy_change()",
        "DROP TRIGGER IF EXISTS gov_approval_decisions_capture ON approval_decisions",
        "CREATE TRIGGER gov_approval_decisions_capture AFTER INSERT ON approval_decisions "
        "FOR EACH ROW EXECUTE FUNCTION gov_capture_decision()",
    ]


def install_governed_capture(bind: Any, tables: Sequence[CapturedTable]) -> None:
    for statement in governed_ddl(bind, tables):
        bind.execute(text(statement))


def uninstall_governed_capture(bind: Any, tables: Sequence[CapturedTable]) -> None:
    """Drop what `install_governed_capture` made (the policy triggers included: the caller
    installs the earlier revision's form again)."""
    postgres = bind.dialect.name == "postgresql"
    statements: list[str] = []
    for t in tables:
        if postgres:
            statements.append(f"DROP TRIGGER IF EXISTS gov_{t.table}_capture ON {t.table}")
        else:
            statements += sqlite_drop_ddl(t.table)
    if postgres:
        statements += [
            "DROP TRIGGER IF EXISTS gov_approval_decisions_capture ON approval_decisions",
            "DROP FUNCTION IF EXISTS gov_capture_decision()",
            "DROP FUNCTION IF EXISTS gov_capture_change()",
        ]
    else:
        statements.append("DROP TRIGGER IF EXISTS gov_approval_decisions_capture")
    for statement in statements:
        bind.execute(text(statement))
