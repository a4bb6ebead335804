"""Tenants and users with roles."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import Tenant, User, UserRole
from gov_pipeline.domain.errors import InvalidInputError, NotFoundError
from gov_pipeline.domain.statuses import Role
from gov_pipeline.domain.storable import check_storable

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
MAX_NAME_CHARS = 200  # tenants.name and users.name are VARCHAR(200)
MAX_EMAIL_CHARS = 320


def check_identifier(field: str, value: str | None) -> str:
    """Return `value` if it is a usable id (letters, digits, `_.-`, at most 100).

    Raises:
        InvalidInputError: missing or malformed.
    """
    if value is None or value == "":
        raise InvalidInputError(field, "is required")
    if not _ID.match(value):
        raise InvalidInputError(field, f"{value[:40]!r} must match [A-Za-z0-9_.-]{{1,100}}")
    return value


def require_tenant(session: Session, tenant_id: str | None) -> Tenant:
    """The tenant `tenant_id`.

    Raises:
        InvalidInputError: no tenant given.
        NotFoundError: no such tenant.
    """
    tid = check_identifier("tenant", tenant_id)
    tenant = session.get(Tenant, tid)
    if tenant is None:
        raise NotFoundError("tenant", tid)
    return tenant


def create_tenant(session: Session, *, tenant_id: str, name: str | None = None) -> Tenant:
    """Create a tenant, or return it unchanged if it exists (idempotent).

    Raises:
        InvalidInputError: a malformed id, or a name longer than 200 characters.
    """
    tid = check_identifier("tenant", tenant_id)
    if name is not None and len(name) > MAX_NAME_CHARS:
        raise InvalidInputError("name", f"at most {MAX_NAME_CHARS} characters")
    check_storable("name", name)
    tenant = session.get(Tenant, tid)
    if tenant is None:
        tenant = Tenant(tenant_id=tid, name=name or tid)
        session.add(tenant)
        session.flush()
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.tenant_id)))


def upsert_user(
    session: Session,
    *,
    tenant_id: str,
    user_id: str,
    name: str | None = None,
    email: str | None = None,
    roles: Iterable[str] = (),
) -> User:
    """Create or update a user and set its roles to `roles`.

    Raises:
        InvalidInputError: malformed id or unknown role.
        NotFoundError: unknown tenant.
    """
    require_tenant(session, tenant_id)
    uid = check_identifier("user", user_id)
    if name is not None and len(name) > MAX_NAME_CHARS:
        raise InvalidInputError("name", f"at most {MAX_NAME_CHARS} characters")
    check_storable("name", name)
    if email is not None and len(email) > MAX_EMAIL_CHARS:
        raise InvalidInputError("email", f"at most {MAX_EMAIL_CHARS} characters")
    check_storable("email", email)
    wanted: set[str] = set()
    for role in roles:
        try:
            wanted.add(Role(role))
        except ValueError:
            known = ", ".join(Role)
            raise InvalidInputError("role", f"unknown role {role!r} (one of: {known})") from None
    user = session.get(User, (tenant_id, uid))
    if user is None:
        user = User(tenant_id=tenant_id, user_id=uid, name=name or uid, email=email)
        session.add(user)
    else:
        user.name = name or user.name
        user.email = email or user.email
    current = set(
        session.scalars(
            select(UserRole.role).where(UserRole.tenant_id == tenant_id, UserRole.user_id == uid)
        )
    )
    for role in current - wanted:
        session.delete(session.get(UserRole, (tenant_id, uid, role)))
    for role in wanted - current:
        session.add(UserRole(tenant_id=tenant_id, user_id=uid, role=role))
    session.flush()
    return user


ROLE_CACHE = "gov_pipeline.role_holders"


def users_with_roles(session: Session, tenant_id: str, roles: Iterable[str]) -> list[str]:
    """Ids of the tenant's active users holding any of `roles`, sorted."""
    wanted = list(roles)
    if not wanted:
        return []
    # A batch transaction (which changes no users) keeps answers in `session.info`.
    cache: dict[tuple[str, tuple[str, ...]], list[str]] | None = session.info.get(ROLE_CACHE)
    key = (tenant_id, tuple(sorted(wanted)))
    if cache is not None and key in cache:
        return list(cache[key])
    query = (
        select(UserRole.user_id)
        .join(User, (User.tenant_id == UserRole.tenant_id) & (User.user_id == UserRole.user_id))
        .where(UserRole.tenant_id == tenant_id, UserRole.role.in_(wanted), User.active.is_(True))
        .distinct()
    )
    found = sorted(session.scalars(query))
    if cache is not None:
        cache[key] = found
    return list(found)


def user_activity(session: Session, tenant_id: str, user_ids: Iterable[str]) -> dict[str, bool]:
    """Whether each of `user_ids` that is a user of the tenant is active; an id missing from
    the answer is no user of the tenant."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    query = select(User.user_id, User.active).where(
        User.tenant_id == tenant_id, User.user_id.in_(wanted)
    )
    return {user_id: bool(active) for user_id, active in session.execute(query)}


def roles_of(session: Session, tenant_id: str, user_id: str) -> set[str]:
    query = select(UserRole.role).where(
        UserRole.tenant_id == tenant_id, UserRole.user_id == user_id
    )
    return set(session.scalars(query))


def list_users(session: Session, tenant_id: str) -> list[tuple[User, list[str]]]:
    require_tenant(session, tenant_id)
    users = session.scalars(
        select(User).where(User.tenant_id == tenant_id).order_by(User.user_id)
    ).all()
    return [(u, sorted(roles_of(session, tenant_id, u.user_id))) for u in users]
