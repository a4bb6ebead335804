"""Which workflow triggers a captured change fires (pure)."""

from __future__ import annotations

from gov_pipeline.domain.statuses import (
    ChangeKind,
    Trigger,
)

# Which workflow triggers a change fires. A status change also counts as an update, as in
# the original system; a soft delete is an update of `deleted_at`.
TRIGGERS_BY_KIND: dict[str, tuple[str, ...]] = {
    ChangeKind.CREATED.value: (Trigger.ON_CREATE.value,),
    ChangeKind.UPDATED.value: (Trigger.ON_UPDATE.value,),
    ChangeKind.STATUS_CHANGED.value: (Trigger.ON_STATUS_CHANGE.value, Trigger.ON_UPDATE.value),
    ChangeKind.DELETED.value: (Trigger.ON_UPDATE.value,),
    ChangeKind.APPROVAL_DECIDED.value: (Trigger.ON_APPROVAL_DECIDED.value,),
}
