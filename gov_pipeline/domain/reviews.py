"""Review cycles (pure): how far a record's `review_frequency` puts its next review, which
entity types have a review cycle, and what the database dates when a record enters a
status. The database's triggers, for every writer, are generated from these (db/reviews.py);
nothing else computes a review date."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gov_pipeline.domain.entities import KINDS, EntityKind
from gov_pipeline.domain.statuses import ReviewFrequency

# Months from one review (or the publication) to the next; None: no next review is
# scheduled (`as_needed`, like a record without a frequency). Calendar months: the 31st
# plus one month is the last day of the next month, 29 February plus a year is 28 February.
REVIEW_INTERVAL_MONTHS: Final[Mapping[ReviewFrequency, int | None]] = MappingProxyType(
    {
        ReviewFrequency.ANNUAL: 12,
        ReviewFrequency.BIENNIAL: 24,
        ReviewFrequency.TRIENNIAL: 36,
        ReviewFrequency.QUARTERLY: 3,
        ReviewFrequency.MONTHLY: 1,
        ReviewFrequency.AS_NEEDED: None,
    }
)
# The column a review cycle schedules, and the one it reads.
NEXT_REVIEW_FIELD: Final = "next_review_date"
FREQUENCY_FIELD: Final = "review_frequency"


def reviewed_kinds() -> tuple[EntityKind, ...]:
    """The entity types with a review cycle (`EntityKind.reviewable`), in registry order."""
    return tuple(kind for kind in KINDS.values() if kind.reviewable)


def reviewable_statuses(kind: EntityKind) -> tuple[str, ...]:
    """The statuses a review of `kind` may be completed in, in lifecycle order."""
    return tuple(s for s in kind.lifecycle.statuses if s in kind.reviewable)


def reviewable_text(kind: EntityKind) -> str:
    """`policy reviews need status published`: the rule, as refusals state it."""
    statuses = reviewable_statuses(kind)
    listed = ", ".join(statuses[:-1]) + " or " + statuses[-1] if len(statuses) > 1 else statuses[0]
    return f"{kind.noun} reviews need status {listed}"


def dated_on_entering(kind: EntityKind, status: str) -> tuple[str, ...]:
    """The columns the database sets when a record of `kind` enters `status`: its stamp
    (`published_date`) and, for a type with a review cycle, the next review date."""
    stamp = kind.stamps.get(status)
    if stamp is None:
        return ()
    return (stamp, NEXT_REVIEW_FIELD) if kind.reviewable else (stamp,)
