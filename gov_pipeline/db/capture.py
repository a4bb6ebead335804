"""Change capture inside the database: triggers on `policies` write `entity_changes`.

Any writer is covered (our services, another application, psql). The actor and the causing
execution come from a transaction-local context: `set_config('gov.*', ..., true)` on
PostgreSQL, a `capture_context` row (deleted before commit) on SQLite.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, event, text
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import CaptureContext

# Fields whose change alone is not a change of the policy.
IGNORED_FIELDS = ("updated_at", "updated_by")
# Always present in old/new values, as the original sent them.
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

SQLITE_DROP_DDL = [
    "DROP TRIGGER IF EXISTS gov_policies_capture_insert",
    "DROP TRIGGER IF EXISTS gov_policies_capture_update",
    "DROP TRIGGER IF EXISTS gov_policies_capture_delete",
]

# str.format templates of the SQLite triggers; the fields are built by `sqlite_ddl`.
_SQLITE_INSERT_TRIGGER = """
        CREATE TRIGGER gov_policies_capture_insert AFTER INSERT ON policies
        BEGIN
            {insert_columns}
            VALUES (NEW.tenant_id, 'policy', CAST(NEW.id AS TEXT), 'created', NULL,
                    {new_object}, {all_names}, {context}, {now});
        END
        """
_SQLITE_UPDATE_TRIGGER = """
        CREATE TRIGGER gov_policies_capture_update AFTER UPDATE ON policies
        WHEN {any_changed}
        BEGIN
            {insert_columns}
            VALUES (NEW.tenant_id, 'policy', CAST(NEW.id AS TEXT),
                    CASE WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN 'deleted'
                         WHEN OLD.status IS NOT NEW.status THEN 'status_changed'
                         ELSE 'updated' END,
                    {old_filtered}, {new_filtered}, {changed_list}, {context}, {now});
        END
        """
_SQLITE_DELETE_TRIGGER = """
        CREATE TRIGGER gov_policies_capture_delete AFTER DELETE ON policies
        BEGIN
            {insert_columns}
            VALUES (OLD.tenant_id, 'policy', CAST(OLD.id AS TEXT), 'deleted',
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
    columns: tuple[tuple[str, str], ...] = SQLITE_POLICY_COLUMNS, *, override: bool = True
) -> list[str]:
    """The SQLite triggers for a policy table with `columns`; `override` (revision 0004 on)
    records a lifecycle override set in `capture_context`."""
    tracked = [(c, s) for c, s in columns if c not in IGNORED_FIELDS]
    changed_list = _sqlite_changed_list(tracked)
    always = " ".join(f"UNION SELECT '{name}'" for name in ALWAYS_FIELDS)
    keep = f"(SELECT value FROM json_each({changed_list}) {always})"
    context, now = _sqlite_context_values(override)
    fields = {
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
        *SQLITE_DROP_DDL,
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
    # writer (say, the sqlite3 shell) would otherwise be recorded under our actor.
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
