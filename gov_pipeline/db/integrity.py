"""What the database itself refuses, for every writer: statuses outside an entity's
lifecycle and illegal moves (triggers on PostgreSQL and SQLite), `updated_at` kept by the
database, and, on PostgreSQL, row-level security per tenant.

Row-level security (PostgreSQL only; SQLite has none): every tenant-owned table has the
policy `gov_tenant_isolation`, which lets a row be seen or written when the
transaction-local setting `gov.tenant_id` names the row's tenant (or is `*`, all tenants)
and the current role is granted that tenant (or `*`) in `gov_tenant_grants`. Roles:

- `gov_writer` (no login): may read the tenant tables, write the governed entity tables and
  insert decisions (`approval_decisions`, its decision columns only); has no tenant of its
  own. Another application's login role is made a member of it and is
  granted its tenants in `gov_tenant_grants` (docs/operations.md, "Row-level security").
- `gov_app` (no login): this project's processes `SET ROLE gov_app` on connect
  (`GOV_PIPELINE_DB_ROLE`); may write every table; is granted `*`.

The policies do not apply to the tables' owner (who runs the migrations) or to superusers.
The capture trigger runs as the owner (SECURITY DEFINER), so a writer needs no right on the
change table, and cannot forge change rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from gov_pipeline.domain.entities import KINDS
from gov_pipeline.domain.lifecycle import Lifecycle

ALL_TENANTS = "*"
APP_ROLE = "gov_app"
WRITER_ROLE = "gov_writer"
TENANT_SETTING = "gov.tenant_id"
# Tables of row-level security itself (PostgreSQL only, outside the models).
RLS_TABLES = ("gov_tenant_grants",)

# What another application may write into `approval_decisions`: the decision, not its
# outcome (which processing sets).
DECISION_COLUMNS = (
    "tenant_id", "approval_id", "decided_by", "decision", "comment", "signature",
)  # fmt: skip


def _quoted(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


# -- the lifecycle ------------------------------------------------------------------------


def lifecycle_ddl_postgres(table: str, lifecycle: Lifecycle) -> list[str]:
    """A BEFORE INSERT OR UPDATE trigger refusing unknown statuses, a new row in another
    status than the initial one (unless importing), and moves the lifecycle forbids
    (unless the transaction set `gov.lifecycle_override`)."""
    kind = str(lifecycle.entity_type)
    statuses = _quoted(lifecycle.statuses)
    listed = ", ".join(lifecycle.statuses)
    pairs = ", ".join(f"({_quoted([f])}, {_quoted([t])})" for f, t in lifecycle.pairs())
    allowed_move = f"(OLD.status, NEW.status) IN ({pairs})" if pairs else "false"
    function = f"gov_lifecycle_{kind}"
    return [
        f"""
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            v_override text := nullif(current_setting('gov.lifecycle_override', true), '');
            v_importing boolean := coalesce(current_setting('gov.importing', true), '') = 'on';
        BEGIN
            IF NEW.status IS NULL OR NEW.status NOT IN ({statuses}) THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = format(
                    'unknown {kind} status %L (one of: {listed})', NEW.status);
            END IF;
            IF TG_OP = 'INSERT' THEN
                IF NEW.status <> '{lifecycle.initial}' AND v_override IS NULL
                   AND NOT v_importing THEN
                    RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = format(
                        'a new {kind} starts as {lifecycle.initial}, not %s (only an import '
                        'may give another status)', NEW.status);
                END IF;
            ELSIF NEW.status IS DISTINCT FROM OLD.status AND v_override IS NULL
                  AND NOT ({allowed_move}) THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = format(
                    'illegal status transition: %s -> %s', OLD.status, NEW.status);
            END IF;
            RETURN NEW;
        END $$
        """,
        f"DROP TRIGGER IF EXISTS gov_{table}_lifecycle ON {table}",
        f"""
        CREATE TRIGGER gov_{table}_lifecycle BEFORE INSERT OR UPDATE OF status ON {table}
        FOR EACH ROW EXECUTE FUNCTION {function}()
        """,
    ]  # fmt: skip


_NOT_OVERRIDDEN = (
    "NOT EXISTS (SELECT 1 FROM capture_context WHERE id = 1 AND lifecycle_override IS NOT NULL)"
)
_NOT_IMPORTING = "NOT EXISTS (SELECT 1 FROM capture_context WHERE id = 1 AND importing)"


def lifecycle_ddl_sqlite(table: str, lifecycle: Lifecycle) -> list[str]:
    """The SQLite form: RAISE takes only a literal message, so there is one statement per
    refused case (an unknown value cannot be quoted in the message)."""
    kind = str(lifecycle.entity_type)
    statuses = _quoted(lifecycle.statuses)
    listed = ", ".join(lifecycle.statuses)
    unknown = (
        f"SELECT RAISE(ABORT, 'unknown {kind} status (one of: {listed})') "
        f"WHERE NEW.status IS NULL OR NEW.status NOT IN ({statuses});"
    )
    on_insert = [unknown] + [
        f"SELECT RAISE(ABORT, 'a new {kind} starts as {lifecycle.initial}, not {s} (only an "
        f"import may give another status)') WHERE NEW.status = '{s}' AND {_NOT_OVERRIDDEN} "
        f"AND {_NOT_IMPORTING};"
        for s in lifecycle.statuses
        if s != lifecycle.initial
    ]
    on_update = [
        f"SELECT RAISE(ABORT, 'illegal status transition: {f} -> (not a {kind} status; one "
        f"of: {listed})') WHERE OLD.status = '{f}' AND (NEW.status IS NULL OR NEW.status NOT "
        f"IN ({statuses}));"
        for f in lifecycle.statuses
    ] + [
        f"SELECT RAISE(ABORT, 'illegal status transition: {f} -> {t}') WHERE OLD.status = "
        f"'{f}' AND NEW.status = '{t}' AND {_NOT_OVERRIDDEN};"
        for f in lifecycle.statuses
        for t in lifecycle.statuses
        if t != f and not lifecycle.allows(f, t)
    ]
    newline = "\n            "
    return [
        f"DROP TRIGGER IF EXISTS gov_{table}_lifecycle_insert",
        f"DROP TRIGGER IF EXISTS gov_{table}_lifecycle_update",
        f"""
        CREATE TRIGGER gov_{table}_lifecycle_insert BEFORE INSERT ON {table}
        BEGIN
            {newline.join(on_insert)}
        END
        """,
        f"""
        CREATE TRIGGER gov_{table}_lifecycle_update BEFORE UPDATE OF status ON {table}
        WHEN NEW.status IS NOT OLD.status
        BEGIN
            {newline.join(on_update)}
        END
        """,
    ]


# -- updated_at -----------------------------------------------------------------------------


TOUCH_FUNCTION_POSTGRES = """
CREATE OR REPLACE FUNCTION gov_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$
"""


def touch_ddl(table: str, postgres: bool) -> list[str]:
    """`updated_at` set by the database on every update that does not set it itself."""
    if postgres:
        return [
            TOUCH_FUNCTION_POSTGRES,
            f"DROP TRIGGER IF EXISTS gov_{table}_touch ON {table}",
            f"CREATE TRIGGER gov_{table}_touch BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION gov_touch_updated_at()",
        ]
    # An AFTER trigger's own UPDATE does not fire it again (recursive triggers are off).
    return [
        f"DROP TRIGGER IF EXISTS gov_{table}_touch",
        f"""
        CREATE TRIGGER gov_{table}_touch AFTER UPDATE ON {table}
        WHEN NEW.updated_at IS OLD.updated_at
        BEGIN
            UPDATE {table} SET updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
             WHERE rowid = NEW.rowid;
        END
        """,
    ]


# -- references to policies ------------------------------------------------------------------

REFERENCE_FUNCTION_POSTGRES = """
CREATE OR REPLACE FUNCTION gov_check_policy_reference() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_policy bigint := (to_jsonb(NEW) ->> TG_ARGV[0])::bigint;
BEGIN
    IF v_policy IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM policies p
         WHERE p.id = v_policy AND p.tenant_id = NEW.tenant_id AND p.deleted_at IS NULL
    ) THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', MESSAGE = format(
            '%s: no policy %s in tenant %L', TG_ARGV[0], v_policy, NEW.tenant_id);
    END IF;
    RETURN NEW;
END $$
"""


def reference_ddl(table: str, columns: Sequence[str], postgres: bool) -> list[str]:
    """Each column of `columns` (naming a policy) must name a live policy of the row's own
    tenant: a foreign key alone would accept another tenant's policy."""
    statements = [REFERENCE_FUNCTION_POSTGRES] if postgres and columns else []
    for column in columns:
        trigger = f"gov_{table}_{column}_tenant"
        if postgres:
            statements += [
                f"DROP TRIGGER IF EXISTS {trigger} ON {table}",
                f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE OF {column}, tenant_id "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION gov_check_policy_reference('{column}')",
            ]
            continue
        for event in ("INSERT", f"UPDATE OF {column}, tenant_id"):
            name = f"{trigger}_{event.split()[0].lower()}"
            statements += [
                f"DROP TRIGGER IF EXISTS {name}",
                f"""
                CREATE TRIGGER {name} BEFORE {event} ON {table}
                WHEN NEW.{column} IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM policies p WHERE p.id = NEW.{column}
                       AND p.tenant_id = NEW.tenant_id AND p.deleted_at IS NULL)
                BEGIN
                    SELECT RAISE(ABORT, '{column}: no such policy in the record''s tenant');
                END
                """,
            ]
    return statements


def _reference_triggers(table: str, columns: Sequence[str], postgres: bool) -> list[str]:
    if postgres:
        return [f"DROP TRIGGER IF EXISTS gov_{table}_{c}_tenant ON {table}" for c in columns]
    return [
        f"DROP TRIGGER IF EXISTS gov_{table}_{c}_tenant_{event}"
        for c in columns
        for event in ("insert", "update")
    ]


# -- settings reserved to this project's processes (PostgreSQL) -------------------------------

# Transaction settings the triggers obey: a lifecycle override, an import's statuses, and
# which execution (at which chain depth) a write belongs to. Only `gov_app` may give them.
RESERVED_SETTINGS = (
    "gov.lifecycle_override",
    "gov.importing",
    "gov.execution_id",
    "gov.chain_depth",
)

RESERVED_FUNCTION_POSTGRES = f"""
CREATE OR REPLACE FUNCTION gov_guard_reserved_settings() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
BEGIN
    IF pg_has_role(current_user, '{APP_ROLE}', 'MEMBER') THEN
        RETURN NULL;
    END IF;
    FOREACH v_name IN ARRAY ARRAY[{_quoted(RESERVED_SETTINGS)}] LOOP
        IF coalesce(current_setting(v_name, true), '') <> '' THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
                '%s is reserved to gov_pipeline''s own processes (role {APP_ROLE}); '
                'role %s may not set it', v_name, current_user);
        END IF;
    END LOOP;
    RETURN NULL;
END $$
"""


def reserved_ddl(table: str) -> list[str]:
    """A statement trigger refusing a write to `table` by a role outside `gov_app` while a
    reserved setting is set (an override of the lifecycle, say)."""
    return [
        RESERVED_FUNCTION_POSTGRES,
        f"DROP TRIGGER IF EXISTS gov_{table}_reserved ON {table}",
        f"CREATE TRIGGER gov_{table}_reserved BEFORE INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION gov_guard_reserved_settings()",
    ]


# -- row-level security (PostgreSQL) ----------------------------------------------------------


def _create_role(name: str) -> str:
    # Roles belong to the server, not the database: another database's migration may be
    # creating the same role at this moment.
    return f"""
    DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
            CREATE ROLE {name} NOLOGIN;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$
    """


def _grant_membership(role: str, member: str) -> str:
    """`member`: a role name, or CURRENT_USER."""
    quoted = member if member == "CURRENT_USER" else f"'{member}'"
    return f"""
    DO $$ BEGIN
        IF NOT pg_has_role({quoted}, '{role}', 'MEMBER') THEN
            GRANT {role} TO {member};
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$
    """


ROLES_DDL = [
    _create_role(WRITER_ROLE),
    _create_role(APP_ROLE),
    _grant_membership(WRITER_ROLE, APP_ROLE),
    # The login that migrates may then `SET ROLE gov_app` (a superuser may anyway).
    _grant_membership(APP_ROLE, "CURRENT_USER"),
]

GRANTS_TABLE_DDL = [
    """
    CREATE TABLE IF NOT EXISTS gov_tenant_grants (
        role_name text NOT NULL,
        tenant_id text NOT NULL,
        PRIMARY KEY (role_name, tenant_id)
    )
    """,
    "ALTER TABLE gov_tenant_grants ENABLE ROW LEVEL SECURITY",
    "DROP POLICY IF EXISTS gov_own_grants ON gov_tenant_grants",
    # A role sees only its own grants; only the owner writes them.
    "CREATE POLICY gov_own_grants ON gov_tenant_grants USING (role_name = current_user)",
    f"GRANT SELECT ON gov_tenant_grants TO {WRITER_ROLE}",
    f"INSERT INTO gov_tenant_grants VALUES ('{APP_ROLE}', '{ALL_TENANTS}') ON CONFLICT DO NOTHING",
    # The setting and the grants do not depend on the row: the policy reads them through
    # subqueries (InitPlans), evaluated once per statement, not once per row.
    f"""
    CREATE OR REPLACE FUNCTION gov_current_tenant() RETURNS text LANGUAGE sql STABLE AS $$
        SELECT t FROM (SELECT current_setting('{TENANT_SETTING}', true) AS t) AS s
         WHERE t <> '{ALL_TENANTS}'
           AND EXISTS (SELECT 1 FROM gov_tenant_grants g
                        WHERE g.role_name = current_user AND g.tenant_id IN (s.t, '{ALL_TENANTS}'))
    $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION gov_all_tenants() RETURNS boolean LANGUAGE sql STABLE AS $$
        SELECT coalesce(current_setting('{TENANT_SETTING}', true), '') = '{ALL_TENANTS}'
           AND EXISTS (SELECT 1 FROM gov_tenant_grants g
                        WHERE g.role_name = current_user AND g.tenant_id = '{ALL_TENANTS}')
    $$
    """,
]


VISIBLE = "(SELECT gov_all_tenants()) OR tenant_id = (SELECT gov_current_tenant())"


def rls_ddl(
    tenant_tables: Sequence[str],
    app_tables: Sequence[str],
    governed_tables: Sequence[str],
    decisions: bool,
) -> list[str]:
    """Roles, grants and the tenant policy on every table of `tenant_tables`; `gov_app` may
    write `app_tables` (every table of the application), `gov_writer` the `governed_tables`
    and, with `decisions`, insert into `approval_decisions`."""
    statements = [*ROLES_DDL, *GRANTS_TABLE_DDL]
    statements.append(
        f"GRANT USAGE ON SCHEMA {_SCHEMA} TO {WRITER_ROLE}",
    )
    for table in tenant_tables:
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS gov_tenant_isolation ON {table}",
            f"CREATE POLICY gov_tenant_isolation ON {table} "
            f"USING ({VISIBLE}) WITH CHECK ({VISIBLE})",
            f"GRANT SELECT ON {table} TO {WRITER_ROLE}",
        ]
    for table in governed_tables:
        statements += [
            f"GRANT INSERT, UPDATE, DELETE ON {table} TO {WRITER_ROLE}",
            f"GRANT USAGE ON SEQUENCE {table}_id_seq TO {WRITER_ROLE}",
        ]
    if decisions:
        statements += [
            f"GRANT INSERT ({', '.join(DECISION_COLUMNS)}) ON approval_decisions TO {WRITER_ROLE}",
            f"GRANT USAGE ON SEQUENCE approval_decisions_id_seq TO {WRITER_ROLE}",
        ]
    for table in app_tables:
        statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
    # The CLI checks the schema's revision before a command runs.
    statements.append(f"GRANT SELECT ON alembic_version TO {APP_ROLE}")
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {_SCHEMA} TO {APP_ROLE}")
    return statements


_SCHEMA = "current_schema"  # replaced by the schema's name at install time


def _with_schema(bind: Any, statements: list[str]) -> list[str]:
    schema = bind.execute(text("SELECT current_schema()")).scalar_one()
    quoted = '"' + str(schema).replace('"', '""') + '"'
    return [s.replace(f"SCHEMA {_SCHEMA}", f"SCHEMA {quoted}") for s in statements]


def install_integrity(
    bind: Any,
    lifecycles: dict[str, Lifecycle],
    tenant_tables: Sequence[str],
    app_tables: Sequence[str],
    *,
    decisions: bool = False,
) -> None:
    """Install the lifecycle and touch triggers on the tables of `lifecycles` (the governed
    tables, which other applications' writers may write) and, on PostgreSQL, row-level
    security; idempotent (a later revision runs it again with more tables). `decisions`
    (revision 0005 on): writers may insert decisions."""
    postgres = bind.dialect.name == "postgresql"
    statements: list[str] = []
    for table, lifecycle in lifecycles.items():
        if postgres:
            statements += lifecycle_ddl_postgres(table, lifecycle) + reserved_ddl(table)
        else:
            statements += lifecycle_ddl_sqlite(table, lifecycle)
        statements += touch_ddl(table, postgres)
        statements += reference_ddl(table, _references(lifecycle), postgres)
    if postgres:
        statements += _with_schema(
            bind, rls_ddl(tenant_tables, app_tables, list(lifecycles), decisions)
        )
        if decisions:
            statements += reserved_ddl("approval_decisions")
    for statement in statements:
        bind.execute(text(statement))


def table_triggers_drop_ddl(lifecycles: dict[str, Lifecycle], postgres: bool) -> list[str]:
    """Drop the lifecycle and touch triggers of the tables of `lifecycles`."""
    statements: list[str] = []
    for table, lifecycle in lifecycles.items():
        statements += _reference_triggers(table, _references(lifecycle), postgres)
        if postgres:
            statements += [
                f"DROP TRIGGER IF EXISTS gov_{table}_lifecycle ON {table}",
                f"DROP TRIGGER IF EXISTS gov_{table}_touch ON {table}",
                f"DROP TRIGGER IF EXISTS gov_{table}_reserved ON {table}",
                f"DROP FUNCTION IF EXISTS gov_lifecycle_{lifecycle.entity_type}()",
            ]
        else:
            statements += [
                f"DROP TRIGGER IF EXISTS gov_{table}_{suffix}"
                for suffix in ("lifecycle_insert", "lifecycle_update", "touch")
            ]
    return statements


def _references(lifecycle: Lifecycle) -> tuple[str, ...]:
    return KINDS[lifecycle.entity_type].policy_references


def uninstall_integrity(
    bind: Any, lifecycles: dict[str, Lifecycle], tenant_tables: Sequence[str]
) -> None:
    """Drop what `install_integrity` made in this database (roles stay: the server's)."""
    postgres = bind.dialect.name == "postgresql"
    statements = table_triggers_drop_ddl(lifecycles, postgres)
    if postgres:
        for table in tenant_tables:
            statements += [
                f"DROP POLICY IF EXISTS gov_tenant_isolation ON {table}",
                f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
            ]
        statements += [
            "DROP FUNCTION IF EXISTS gov_current_tenant()",
            "DROP FUNCTION IF EXISTS gov_all_tenants()",
            "DROP TABLE IF EXISTS gov_tenant_grants",
            "DROP FUNCTION IF EXISTS gov_touch_updated_at()",
            "DROP FUNCTION IF EXISTS gov_check_policy_reference()",
            "DROP FUNCTION IF EXISTS gov_guard_reserved_settings()",
        ]
    for statement in statements:
        bind.execute(text(statement))
