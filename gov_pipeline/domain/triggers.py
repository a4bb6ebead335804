"""Which workflow triggers a captured change fires (pure)."""

from __future__ import annotations

from gov_pipeline.domain.statuses import ChangeKind, Trigger

# Which workflow triggers a change fires. A status change also counts as an update, as in
# the original system; a soft delete is an update of `deleted_at`.
TRIGGERS_BY_KIND: dict[str, tuple[str, ...]] = {
    ChangeKind.CREATED: (Trigger.ON_CREATE,),
    ChangeKind.UPDATED: (Trigger.ON_UPDATE,),
    ChangeKind.STATUS_CHANGED: (Trigger.ON_STATUS_CHANGE, Trigger.ON_UPDATE),
    ChangeKind.DELETED: (Trigger.ON_UPDATE,),
    ChangeKind.APPROVAL_DECIDED: (Trigger.ON_APPROVAL_DECIDED,),
}
