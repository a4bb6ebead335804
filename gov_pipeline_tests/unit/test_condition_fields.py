"""Condition fields are checked against the entity type's fields when a definition is parsed
(gov_pipeline.domain.entity_fields, gov_pipeline.domain.definitions): a typo is refused with
its path and the nearest valid name, instead of validating and never firing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON

from gov_pipeline.db.models import ENTITY_MODELS
from gov_pipeline.domain.conditions import validate_condition
from gov_pipeline.domain.definitions import load_definition_file, parse_definition
from gov_pipeline.domain.entities import KINDS
from gov_pipeline.domain.entity_fields import (
    APPROVAL_DECISION_NEW,
    APPROVAL_DECISION_OLD,
    ENTITY_FIELDS,
    current_row_fields,
    readable_fields,
)
from gov_pipeline.domain.record_fields import editable_fields
from gov_pipeline.domain.statuses import EntityType, Trigger
from gov_pipeline_tests.unit.test_definitions import issues_of, with_

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"

STATUS_TYPO = "unknown field 'staus' of policy (did you mean 'status'?)"


def with_conditions(conditions: object, **changes: Any) -> dict[str, Any]:
    return with_(conditions=conditions, **changes)


# -- the field names live in one domain module, and match the table ---------------------------


@pytest.mark.parametrize("entity_type", list(EntityType))
def test_each_entity_types_fields_are_the_columns_of_its_table(entity_type: EntityType) -> None:
    fields = ENTITY_FIELDS[entity_type]
    model = ENTITY_MODELS[entity_type]
    assert model.__tablename__ == KINDS[entity_type].table
    columns = model.__table__.columns
    assert set(fields.names) == {column.name for column in columns}
    assert len(fields.names) == len(set(fields.names))
    # The fields a path may go below: exactly the JSON columns.
    assert fields.containers == {c.name for c in columns if isinstance(c.type, JSON)}
    kind = KINDS[entity_type]
    # What the kind names are columns of its table.
    named = {*kind.required, *kind.always, kind.owner_field, *kind.system_fields}
    named |= {kind.deadline_field} if kind.deadline_field else set()
    named |= set(kind.stamps.values())
    assert named <= set(fields.names)
    assert set(editable_fields(entity_type)) <= set(fields.names) - kind.read_only


def test_the_policy_fields_hold_the_original_json_columns() -> None:
    assert ENTITY_FIELDS[EntityType.POLICY].containers == {
        "custom_fields",
        "tags",
        "business_units",
    }


def test_the_approval_decision_fields_are_what_decide_records() -> None:
    assert set(APPROVAL_DECISION_NEW.names) == {
        *("decision_id", "approval_id", "execution_id", "step_index"),
        *("approval_status", "decision", "decided_by"),
    }
    assert APPROVAL_DECISION_OLD.names == ("approval_status",)
    decided = readable_fields(EntityType.POLICY, Trigger.ON_APPROVAL_DECIDED)
    assert (decided.old, decided.new) == (APPROVAL_DECISION_OLD, APPROVAL_DECISION_NEW)
    # entity.* is the current row, without what conditions are not given (content).
    assert decided.entity == current_row_fields(EntityType.POLICY)
    assert set(decided.entity.names) == set(ENTITY_FIELDS[EntityType.POLICY].names) - {"content"}
    for trigger in Trigger:
        # A scheduled tick is not a change: its `old` is empty and its `new` is the current
        # row (gov_pipeline_tests/unit/test_scheduled_trigger.py).
        if trigger not in (Trigger.ON_APPROVAL_DECIDED, Trigger.SCHEDULED):
            readable = readable_fields(EntityType.POLICY, trigger)
            assert (
                readable.old == readable.new == readable.changed == ENTITY_FIELDS[EntityType.POLICY]
            )
            assert readable.entity == current_row_fields(EntityType.POLICY)


# -- typos --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "path"),
    [
        ({"field": "new.staus", "op": "eq", "value": "draft"}, "conditions.field"),
        ({"field": "old.staus", "op": "eq", "value": "draft"}, "conditions.field"),
        ({"field": "entity.staus", "op": "eq", "value": "draft"}, "conditions.field"),
        ({"field": "staus", "op": "changed_to", "value": "draft"}, "conditions.field"),
        ({"all": [{"field": "new.staus", "op": "exists"}]}, "conditions.all[0].field"),
        (
            {"any": [{"policy_type": "x"}, {"not": {"field": "staus", "op": "changed"}}]},
            "conditions.any[1].not.field",
        ),
        ({"new.staus": "draft"}, "conditions.new.staus"),  # shorthand: the key is the field
    ],
)
def test_a_misspelt_field_is_refused_with_its_path_and_the_nearest_name(
    conditions: object, path: str
) -> None:
    assert issues_of(with_conditions(conditions)) == [(path, STATUS_TYPO)]


def test_every_misspelt_field_of_a_tree_is_reported_with_its_own_suggestion() -> None:
    conditions = {
        "all": [
            {"field": "polcy_type", "op": "eq", "value": "Privacy"},
            {"field": "entity.ownr_id", "op": "exists"},
            {"field": "new.status", "op": "changed_to", "value": "in_review"},
            {"field": "new.custom_feilds.risk", "op": "eq", "value": "high"},
        ]
    }
    assert issues_of(with_conditions(conditions)) == [
        ("conditions.all[0].field", "unknown field 'polcy_type' of policy (did you mean "
         "'policy_type'?)"),
        ("conditions.all[1].field", "unknown field 'ownr_id' of policy (did you mean "
         "'owner_id'?)"),
        ("conditions.all[3].field", "unknown field 'custom_feilds' of policy (did you mean "
         "'custom_fields'?)"),
    ]  # fmt: skip


def test_a_name_like_no_field_lists_the_fields() -> None:
    ((path, message),) = issues_of(with_conditions({"field": "new.zzz", "op": "exists"}))
    assert path == "conditions.field"
    assert message.startswith("unknown field 'zzz' of policy (one of: id, tenant_id, title, ")
    assert "custom_fields" in message and "did you mean" not in message


def test_the_content_of_the_current_row_is_withheld_with_what_to_read_instead() -> None:
    ((path, message),) = issues_of(with_conditions({"field": "entity.content", "op": "exists"}))
    assert path == "conditions.field"
    assert message == (
        "field 'content' of policy is not given to conditions: it may hold megabytes; "
        "test `changed` (contains content) or `new.content`"
    )
    # What the change carries is readable: new.content, and the bare name (new first).
    for field in ("new.content", "content"):
        parse_definition(with_conditions({"field": field, "op": "contains", "value": "x"}))


def test_the_field_check_reports_together_with_the_other_issues() -> None:
    data = with_conditions(
        {"field": "new.staus", "op": "eq", "value": "draft"},
        actions=[{"type": "notify", "title": "no recipient"}],
    )
    paths = [path for path, _ in issues_of(data)]
    assert paths == ["conditions.field", "actions[0]"]


# -- what is allowed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        *("status", "new.status", "old.status", "entity.status", "entity.id", "deleted_at"),
        *("new.custom_fields.risk_level", "entity.custom_fields.any.depth.at_all"),
        *("old.custom_fields.x", "entity.tags.0", "new.tags", "entity.business_units.3"),
        *("custom_fields", "entity.updated_at", "changed", "changed.0", "actor", "trigger"),
        *("new", "entity"),
    ],
)
def test_known_fields_and_paths_under_json_fields_are_accepted(field: str) -> None:
    parse_definition(with_conditions({"field": field, "op": "exists"}))


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("new.status.code", "status"),
        ("entity.title.0", "title"),
        ("old.owner_id.name", "owner_id"),
        ("entity.next_review_date.year", "next_review_date"),
    ],
)
def test_a_path_below_a_field_that_is_not_json_is_refused(field: str, name: str) -> None:
    assert issues_of(with_conditions({"field": field, "op": "exists"})) == [
        (
            "conditions.field",
            f"'{name}' of policy has no sub-fields (only business_units, tags, custom_fields do)",
        )
    ]


def test_an_index_is_not_a_field_name() -> None:
    assert issues_of(with_conditions({"field": "new.0", "op": "exists"}))[0][1].startswith(
        "unknown field '0' of policy"
    )


# -- on_approval_decided: old / new are the decision --------------------------------------------


def decided(conditions: object) -> dict[str, Any]:
    return with_conditions(conditions, trigger="on_approval_decided")


@pytest.mark.parametrize(
    "field",
    [
        *("new.approval_id", "new.execution_id", "new.step_index", "new.approval_status"),
        *("new.decision", "new.decided_by", "old.approval_status"),
        *("entity.status", "status", "entity.custom_fields.x", "policy_type", "actor"),
    ],
)
def test_on_approval_decided_reads_the_decision_in_old_and_new(field: str) -> None:
    parse_definition(decided({"field": field, "op": "exists"}))


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (
            "new.decison",
            "unknown field 'decison' of the approval decision (did you mean 'decision'?)",
        ),
        (
            "new.status",
            "unknown field 'status' of the approval decision (one of: decision_id, "
            "approval_id, execution_id, step_index, approval_status, decision, decided_by)",
        ),
        (
            "old.decision",
            "unknown field 'decision' of the approval before the decision "
            "(one of: approval_status)",
        ),
        # A bare name and entity.* are the entity's fields, whatever the trigger.
        ("decision", "unknown field 'decision' of policy (did you mean 'version'?)"),
        ("entity.decided_by", "unknown field 'decided_by' of policy (did you mean 'updated_by'?)"),
        ("new.decision.code", "'decision' of the approval decision has no sub-fields"),
    ],
)
def test_on_approval_decided_refuses_what_a_decision_does_not_hold(
    field: str, message: str
) -> None:
    ((path, got),) = issues_of(decided({"field": field, "op": "exists"}))
    assert path == "conditions.field"
    assert got.startswith(message), got


def test_other_triggers_do_not_read_the_decision() -> None:
    ((_, message),) = issues_of(with_conditions({"field": "new.decision", "op": "exists"}))
    assert message.startswith("unknown field 'decision' of policy")


# -- {field: changed, op: contains, value: NAME} ------------------------------------------------


def test_changed_contains_takes_a_field_name() -> None:
    parse_definition(with_conditions({"field": "changed", "op": "contains", "value": "content"}))
    assert issues_of(
        with_conditions({"field": "changed", "op": "contains", "value": "contnet"})
    ) == [("conditions.value", "unknown field 'contnet' of policy (did you mean 'content'?)")]


def test_changed_contains_on_a_decision_takes_a_decision_field() -> None:
    parse_definition(decided({"field": "changed", "op": "contains", "value": "approval_status"}))
    ((path, message),) = issues_of(
        decided({"field": "changed", "op": "contains", "value": "status"})
    )
    assert path == "conditions.value"
    assert message.startswith("unknown field 'status' of what an approval decision changes")


def test_only_a_string_value_of_changed_contains_is_checked() -> None:
    # Not a name: never true, but not a typo of one either (and other operators are free).
    parse_definition(with_conditions({"field": "changed", "op": "contains", "value": 3}))
    parse_definition(with_conditions({"field": "changed", "op": "eq", "value": ["x"]}))
    parse_definition(with_conditions({"field": "new.title", "op": "contains", "value": "x"}))


# -- other entity types, stored definitions, the condition API, the examples ------------------


@pytest.mark.parametrize(
    ("entity_type", "field", "typo", "nearest"),
    [
        ("risk", "risk_score", "risk_scor", "risk_score"),
        ("compliance_requirement", "framework", "framwork", "framework"),
        ("task", "assignee_id", "asignee_id", "assignee_id"),
        ("sop", "process_area", "proces_area", "process_area"),
        ("policy_exception", "expiry_date", "expiry_dat", "expiry_date"),
    ],
)
def test_every_entity_type_reads_its_own_fields(
    entity_type: str, field: str, typo: str, nearest: str
) -> None:
    parse_definition(
        with_conditions({"field": f"entity.{field}", "op": "exists"}, entity_type=entity_type)
    )
    data = with_conditions({"field": f"new.{typo}", "op": "exists"}, entity_type=entity_type)
    ((path, message),) = issues_of(data)
    noun = KINDS[EntityType(entity_type)].noun
    assert (path, message) == (
        "conditions.field",
        f"unknown field {typo!r} of {noun} (did you mean {nearest!r}?)",
    )
    # A policy's field is not a field of the others.
    data = with_conditions({"field": "entity.policy_type", "op": "exists"}, entity_type=entity_type)
    assert issues_of(data)[0][1].startswith(f"unknown field 'policy_type' of {noun}")


def test_a_stored_definition_is_loaded_without_the_field_check() -> None:
    # Versions applied before the check existed must keep loading (the engine reads them).
    data = with_conditions({"field": "new.staus", "op": "eq", "value": "draft"})
    assert parse_definition(data, check_fields=False).conditions == data["conditions"]


def test_the_condition_api_checks_fields_only_when_told_which() -> None:
    node = {"field": "new.staus", "op": "exists"}
    assert validate_condition(node) == []
    readable = readable_fields(EntityType.POLICY, Trigger.ON_UPDATE)
    assert [str(i) for i in validate_condition(node, "wf", readable)] == [
        f"wf.field: {STATUS_TYPO}"
    ]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_workflow_validates(path: Path) -> None:
    assert load_definition_file(path)
