"""Unit tests for the condition language (gov_pipeline.domain.conditions)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gov_pipeline.domain.conditions import (
    MAX_NODES,
    MAX_PATH_DEPTH,
    MAX_TREE_DEPTH,
    OPERATORS,
    compile_condition,
    condition_fields,
    validate_condition,
)
from gov_pipeline.domain.errors import DefinitionError

CTX: dict[str, Any] = {
    "old": {
        "status": "draft",
        "tags": ["a"],
        "custom_fields": {"risk_level": "low", "region": "eu"},
        "score": 3,
    },
    "new": {
        "status": "in_review",
        "policy_type": "Information Security",
        "title": "Access Control Policy",
        "tags": ["a", "b"],
        "custom_fields": {"risk_level": "high", "region": "eu"},
        "score": 7,
        "ratio": 0.5,
        "flag": True,
        "owner_id": None,
        "effective_date": "2024-06-30",
    },
    "changed": ["status", "tags", "custom_fields", "score"],
    "entity": {"id": "p1", "status": "in_review", "owner_id": "u1", "version_number": 2},
    "actor": "u9",
    "trigger": "on_status_change",
}


def leaf(field: str, op: str, *value: object) -> dict[str, object]:
    node: dict[str, object] = {"field": field, "op": op}
    if value:
        node["value"] = value[0]
    return node


def evaluate(node: object, context: object = CTX) -> bool:
    return compile_condition(node).evaluate(context)


def paths(node: object) -> list[str]:
    return [issue.path for issue in validate_condition(node)]


# (node, expected on CTX); every operator has a true, a false and a missing-field case.
OPERATOR_CASES = [
    (leaf("new.status", "eq", "in_review"), True),
    (leaf("new.status", "eq", "draft"), False),
    (leaf("new.nope", "eq", "draft"), False),
    (leaf("new.status", "neq", "draft"), True),
    (leaf("new.status", "neq", "in_review"), False),
    (leaf("new.nope", "neq", "draft"), False),
    (leaf("new.score", "gt", 5), True),
    (leaf("new.score", "gt", 7), False),
    (leaf("new.nope", "gt", 0), False),
    (leaf("new.score", "gte", 7), True),
    (leaf("new.score", "gte", 7.5), False),
    (leaf("new.nope", "gte", 0), False),
    (leaf("new.ratio", "lt", 1), True),
    (leaf("new.score", "lt", 7), False),
    (leaf("new.nope", "lt", 0), False),
    (leaf("new.score", "lte", 7.0), True),
    (leaf("new.ratio", "lte", 0.1), False),
    (leaf("new.nope", "lte", 0), False),
    (leaf("new.status", "in", ["draft", "in_review"]), True),
    (leaf("new.status", "in", ["draft"]), False),
    (leaf("new.nope", "in", ["draft", None]), False),
    (leaf("new.status", "not_in", ["draft"]), True),
    (leaf("new.status", "not_in", ["in_review"]), False),
    (leaf("new.nope", "not_in", ["draft"]), False),
    (leaf("new.tags", "contains", "b"), True),
    (leaf("new.title", "contains", "Access"), True),
    (leaf("new.tags", "contains", "z"), False),
    (leaf("new.nope", "contains", "z"), False),
    (leaf("entity.owner_id", "exists"), True),
    (leaf("new.owner_id", "exists"), False),  # null counts as absent
    (leaf("new.nope", "exists"), False),
    (leaf("new.status", "changed"), True),
    (leaf("new.title", "changed"), False),
    (leaf("new.nope", "changed"), False),
    (leaf("new.status", "changed_to", "in_review"), True),
    (leaf("new.status", "changed_to", "approved"), False),
    (leaf("new.title", "changed_to", "Access Control Policy"), False),  # not in `changed`
    (leaf("new.nope", "changed_to", "x"), False),
    (leaf("new.status", "changed_from", "draft"), True),
    (leaf("new.status", "changed_from", "approved"), False),
    (leaf("new.nope", "changed_from", "x"), False),
]


@pytest.mark.parametrize(("node", "expected"), OPERATOR_CASES)
def test_operator(node: dict[str, object], expected: bool) -> None:
    assert evaluate(node) is expected


def test_every_operator_is_covered() -> None:
    assert {node["op"] for node, _ in OPERATOR_CASES} == set(OPERATORS)


@pytest.mark.parametrize(
    "node",
    [
        leaf("new.status", "gt", 1),  # str vs int
        leaf("new.score", "gt", "1"),  # int vs str
        leaf("new.flag", "gt", 0),  # bool is not a number
        leaf("new.flag", "eq", 1),
        leaf("new.flag", "in", [1]),
        leaf("new.owner_id", "lt", 5),  # null
        leaf("new.tags", "gte", "a"),  # list
        leaf("new.status", "contains", 1),
        leaf("new.score", "contains", 7),
        leaf("new.custom_fields", "contains", "risk_level"),  # dicts do not "contain"
        leaf("new.score", "eq", "7"),
    ],
)
def test_type_mismatch_is_false_not_an_error(node: dict[str, object]) -> None:
    assert evaluate(node) is False


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (leaf("new.score", "eq", 7.0), True),  # int and float compare
        (leaf("new.status", "gt", "a"), True),  # strings order lexicographically
        (leaf("new.flag", "eq", True), True),
        (leaf("new.owner_id", "eq", None), True),  # present and null
        (leaf("new.tags", "eq", ["a", "b"]), True),
        (leaf("new.custom_fields", "eq", {"region": "eu", "risk_level": "high"}), True),
        (leaf("new.tags.1", "eq", "b"), True),  # list index
        (leaf("new.tags.5", "eq", "b"), False),
        (leaf("new.custom_fields.risk_level", "eq", "high"), True),
        (leaf("new.effective_date", "gte", date(2024, 6, 1)), True),  # YAML dates → ISO
        (leaf("actor", "eq", "u9"), True),
        (leaf("trigger", "in", ["on_status_change", "on_update"]), True),
        (leaf("changed", "contains", "status"), True),
        (leaf("changed.0", "eq", "status"), True),
    ],
)
def test_comparisons(node: dict[str, object], expected: bool) -> None:
    assert evaluate(node) is expected


def test_nested_changed_compares_old_and_new() -> None:
    assert evaluate(leaf("new.custom_fields.risk_level", "changed")) is True
    assert evaluate(leaf("new.custom_fields.region", "changed")) is False
    assert evaluate(leaf("entity.custom_fields.risk_level", "changed_from", "low")) is True
    assert evaluate(leaf("new.custom_fields.risk_level", "changed_to", "high")) is True


def test_changed_to_on_create_has_no_old_value() -> None:
    context = {"old": {}, "new": {"status": "draft"}, "changed": ["status"]}
    assert evaluate(leaf("status", "changed_to", "draft"), context) is True
    assert evaluate(leaf("status", "changed_from", "draft"), context) is False


def test_bare_name_reads_new_then_entity() -> None:
    assert evaluate(leaf("status", "eq", "in_review")) is True
    assert evaluate(leaf("version_number", "eq", 2)) is True  # only in entity
    assert evaluate(leaf("id", "eq", "p1")) is True
    # present in `new` (even as null) wins over entity
    assert evaluate(leaf("owner_id", "eq", None)) is True
    assert evaluate(leaf("owner_id", "eq", "u1")) is False
    assert evaluate(leaf("status", "changed_from", "draft")) is True


def test_nesting() -> None:
    yes, no = leaf("new.status", "eq", "in_review"), leaf("new.status", "eq", "draft")
    assert evaluate({"all": [yes, {"any": [no, yes]}]}) is True
    assert evaluate({"all": [yes, {"any": [no, {"not": yes}]}]}) is False
    assert evaluate({"not": {"all": [yes, no]}}) is True
    assert evaluate({"any": [{"not": {"not": yes}}]}) is True
    assert evaluate({"all": []}) is True
    assert evaluate({"any": []}) is False
    assert evaluate({"not": {"any": []}}) is True


def test_not_of_missing_field_is_true() -> None:
    assert evaluate({"not": leaf("new.nope", "eq", "x")}) is True


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"status": "in_review", "policy_type": "Information Security"}, True),
        ({"status": "in_review", "policy_type": "Finance"}, False),
        ({"custom_fields": {"risk_level": "high", "region": "eu"}}, True),
        ({"tags": ["a", "b"]}, True),
        ({"new.status": "in_review", "old.status": "draft"}, True),
        ({"id": "p1"}, True),
        ({"nope": None}, False),
        ({}, True),
        (None, True),
    ],
)
def test_shorthand(node: object, expected: bool) -> None:
    assert evaluate(node) is expected


@pytest.mark.parametrize(
    "context",
    [{}, None, [], "x", 3, {"new": [], "entity": "x", "changed": "status"}, {"new": None}],
)
def test_evaluate_never_raises_on_odd_contexts(context: object) -> None:
    tree = {
        "any": [
            leaf("new.status", "eq", "x"),
            leaf("status", "changed_to", "x"),
            leaf("new.tags.0", "gt", 1),
            leaf("actor", "exists"),
            {"not": {"status": "x"}},
        ]
    }
    compiled = compile_condition(tree)
    assert compiled.evaluate(context) is True  # only the `not` matches
    assert compiled.explain(context) == []
    assert compile_condition(tree["any"][0]).explain(context) == ["new.status eq 'x' (missing)"]


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (leaf("new.status", "eq", "approved"), ["new.status eq 'approved' (was 'in_review')"]),
        (leaf("new.nope", "exists"), ["new.nope exists (missing)"]),
        (leaf("new.owner_id", "exists"), ["new.owner_id exists (was None)"]),
        (leaf("new.title", "changed_to", "x"), ["new.title changed_to 'x' (not changed)"]),
        (
            leaf("new.status", "changed_to", "approved"),
            ["new.status changed_to 'approved' (changed from 'draft' to 'in_review')"],
        ),
        (
            {"any": [leaf("new.score", "gt", 10), {"status": "draft"}]},
            ["new.score gt 10 (was 7)", "status eq 'draft' (was 'in_review')"],
        ),
        (
            {"all": [leaf("new.score", "gt", 1), {"not": leaf("new.tags", "contains", "a")}]},
            ["not (new.tags contains 'a') (it matched)"],
        ),
        ({"any": []}, ["any [] (no alternatives: always false)"]),
        (leaf("new.status", "eq", "in_review"), []),
    ],
)
def test_explain(node: object, expected: list[str]) -> None:
    assert compile_condition(node).explain(CTX) == expected


def test_explain_truncates_huge_values() -> None:
    context = {"new": {"status": "x" * 10_000, "n": 10**5000}}
    lines = compile_condition({"status": "y", "n": 1}).explain(context)
    assert len(lines) == 2
    assert all(len(line) < 200 for line in lines)


@pytest.mark.parametrize(
    ("node", "expected_paths"),
    [
        (
            {"all": [leaf("new.status", "eq", 1), {"any": [leaf("new.x", "bogus", 1)]}]},
            ["conditions.all[1].any[0].op"],
        ),
        ({"field": "new.status"}, ["conditions.op"]),
        ({"op": "eq", "value": 1}, ["conditions.field"]),
        (leaf("foo.bar", "eq", 1), ["conditions.field"]),
        (leaf("new.bad-seg", "eq", 1), ["conditions.field"]),
        (leaf("0", "eq", 1), ["conditions.field"]),
        (leaf("actor.name", "eq", 1), ["conditions.field"]),
        (leaf("actor", "changed"), ["conditions.field"]),
        ({"field": 5, "op": "eq", "value": 1}, ["conditions.field"]),
        (leaf("new.status", "in", "draft"), ["conditions.value"]),
        (leaf("new.status", "exists", True), ["conditions.value"]),
        (leaf("new.status", "changed", True), ["conditions.value"]),
        (leaf("new.status", "changed_to"), ["conditions.value"]),
        (leaf("new.status", "eq"), ["conditions.value"]),
        (leaf("new.status", "gt", None), ["conditions.value"]),
        (leaf("new.status", "lt", [1]), ["conditions.value"]),
        (leaf("new.status", "eq", {1, 2}), ["conditions.value"]),
        ({**leaf("new.status", "eq", 1), "extra": 2}, ["conditions.extra"]),
        ({"all": leaf("new.status", "exists")}, ["conditions.all"]),
        ({"not": [leaf("new.status", "exists")]}, ["conditions.not"]),
        ({"not": None}, ["conditions.not"]),
        ({"all": [], "any": []}, ["conditions"]),
        ({"any": [], "status": "x"}, ["conditions"]),
        ([leaf("new.status", "exists")], ["conditions"]),
        ("status == 'x'", ["conditions"]),
        ({"status": "x", 1: "y", "bad key": 1}, ["conditions[1]", "conditions['bad key']"]),
        (
            {"all": [{"op": "x"}, leaf("zzz.a", "eq", 1), 5, {"not": {"any": [{"op": "eq"}]}}]},
            [
                "conditions.all[0].field",
                "conditions.all[0].op",
                "conditions.all[1].field",
                "conditions.all[2]",
                "conditions.all[3].not.any[0].field",
                "conditions.all[3].not.any[0].value",
            ],
        ),
    ],
)
def test_validation_paths(node: object, expected_paths: list[str]) -> None:
    assert paths(node) == expected_paths
    with pytest.raises(DefinitionError) as info:
        compile_condition(node)
    assert [issue.path for issue in info.value.issues] == expected_paths


@pytest.mark.parametrize(
    ("node", "words"),
    [
        (leaf("new.x", "bogus", 1), ["unknown operator 'bogus'", "eq", "changed_from"]),
        (leaf("foo.bar", "eq", 1), ["unknown root 'foo'", "entity"]),
        (leaf("new.status", "in", "x"), ["'in' needs a list value", "str"]),
        (leaf("new.status", "exists", 1), ["'exists' takes no value"]),
        ({"all": 3}, ["'all' takes a list"]),
    ],
)
def test_validation_messages(node: object, words: list[str]) -> None:
    (issue,) = validate_condition(node)
    assert all(word in issue.message for word in words), issue.message


def test_issue_path_prefix() -> None:
    issues = validate_condition({"any": [{"op": "eq", "field": "x"}]}, path="wf.conditions")
    assert [str(issue) for issue in issues] == ["wf.conditions.any[0].value: 'eq' needs a value"]


def not_chain(depth: int) -> object:
    node: object = leaf("new.status", "exists")
    for _ in range(depth - 1):
        node = {"not": node}
    return node


def test_tree_depth_limit() -> None:
    assert validate_condition(not_chain(MAX_TREE_DEPTH)) == []
    (issue,) = validate_condition(not_chain(MAX_TREE_DEPTH + 1))
    assert "too deep" in issue.message
    assert issue.path == "conditions" + ".not" * MAX_TREE_DEPTH


def test_node_limit() -> None:
    one = leaf("new.status", "exists")
    assert validate_condition({"any": [one] * (MAX_NODES - 1)}) == []
    (issue,) = validate_condition({"any": [one] * MAX_NODES})
    assert f"more than {MAX_NODES} nodes" in issue.message
    (issue,) = validate_condition({f"f{i}": 1 for i in range(MAX_NODES + 5)})
    assert f"more than {MAX_NODES} nodes" in issue.message


def test_path_depth_limit() -> None:
    ok = "new." + ".".join(["a"] * (MAX_PATH_DEPTH - 1))
    assert validate_condition(leaf(ok, "exists")) == []
    (issue,) = validate_condition(leaf(ok + ".a", "exists"))
    assert issue.path == "conditions.field"
    assert "deeper than" in issue.message


def test_value_limits() -> None:
    deep: object = 1
    for _ in range(MAX_TREE_DEPTH + 1):
        deep = [deep]
    assert paths(leaf("new.x", "eq", deep)) == ["conditions.value"]
    assert paths(leaf("new.x", "in", list(range(20_000)))) == ["conditions.value"]
    assert paths(leaf("new.x", "eq", 2**64)) == ["conditions.value"]
    assert paths(leaf("new.x", "eq", -(2**63))) == []
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert paths({"x": cyclic}) == ["conditions.x"]
    assert paths({"any": [cyclic]}) == ["conditions.any[0]"]


def test_condition_fields() -> None:
    compiled = compile_condition(
        {"all": [leaf("new.status", "eq", "x"), {"not": {"owner_id": 1, "old.tags": []}}]}
    )
    assert condition_fields(compiled) == {"new.status", "owner_id", "old.tags"}
    assert condition_fields(compile_condition(None)) == set()


def test_str_describes_the_tree() -> None:
    compiled = compile_condition({"any": [leaf("status", "in", ["a"]), {"not": {"x": 1}}]})
    assert str(compiled) == "any(status in ['a'], not (x eq 1))"


# --- property tests -------------------------------------------------------------------------

KEYS = st.sampled_from(
    ["op", "all", "any", "not", "field", "value", "status", "new.status", "entity.x", "old"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["eq", "in", "exists", "changed", "new.status", "status", "draft"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=6), inner),
    max_leaves=25,
)
FIELDS = st.sampled_from(
    [
        *("status", "owner_id", "tags", "new.status", "old.status", "entity.owner_id"),
        *("new.tags.0", "new.custom_fields.risk", "actor", "trigger", "changed", "changed.0", "x"),
    ]
)
POOL = st.sampled_from(["draft", "in_review", "a", "", 0, 1, 1.5, True, False, None, ["a"]])
VALUES = POOL | st.lists(POOL, max_size=3)

VALID_LEAF = st.one_of(
    st.builds(leaf, FIELDS, st.sampled_from(["eq", "neq", "contains"]), VALUES),
    st.builds(leaf, FIELDS, st.sampled_from(["gt", "gte", "lt", "lte"]), st.integers() | st.text()),
    st.builds(leaf, FIELDS, st.sampled_from(["in", "not_in"]), st.lists(POOL, max_size=3)),
    st.builds(
        leaf,
        FIELDS.filter(lambda f: f.split(".")[0] not in ("actor", "trigger", "changed")),
        st.sampled_from(["changed_to", "changed_from"]),
        POOL,
    ),
    st.builds(leaf, FIELDS, st.just("exists")),
    st.builds(
        leaf,
        FIELDS.filter(lambda f: f.split(".")[0] not in ("actor", "trigger", "changed")),
        st.just("changed"),
    ),
    st.dictionaries(FIELDS.filter(lambda f: f not in ("x",)), VALUES, max_size=3),
)
VALID_TREE = st.recursive(
    VALID_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda c: {"all": c})
        | st.lists(inner, max_size=3).map(lambda c: {"any": c})
        | inner.map(lambda c: {"not": c})
    ),
    max_leaves=12,
)
ROW = st.dictionaries(st.sampled_from(["status", "owner_id", "tags", "custom_fields", "x"]), VALUES)
CONTEXTS = (
    st.fixed_dictionaries(
        {},
        optional={
            "old": ROW | JSON,
            "new": ROW | JSON,
            "entity": ROW,
            "changed": st.lists(st.sampled_from(["status", "tags", "owner_id"])) | JSON,
            "actor": st.text(max_size=5) | JSON,
            "trigger": st.sampled_from(["on_update", "manual"]),
        },
    )
    | JSON
)


@settings(max_examples=300, deadline=None)
@given(node=JSON | VALID_TREE, context=CONTEXTS)
def test_random_trees_compile_or_refuse_and_never_crash(node: object, context: object) -> None:
    try:
        compiled = compile_condition(node)
    except DefinitionError as exc:
        assert exc.issues
        assert validate_condition(node) == exc.issues
        return
    assert validate_condition(node) == []
    result = compiled.evaluate(context)
    assert isinstance(result, bool)
    assert (compiled.explain(context) == []) is result
    assert isinstance(str(compiled), str)


@settings(max_examples=300, deadline=None)
@given(flat=st.dictionaries(FIELDS, VALUES, max_size=4), context=CONTEXTS)
def test_shorthand_equals_explicit_all_of_eq(flat: dict[str, object], context: object) -> None:
    explicit = {"all": [leaf(field, "eq", value) for field, value in flat.items()]}
    assert evaluate(flat, context) is evaluate(explicit, context)


@settings(max_examples=300, deadline=None)
@given(tree=VALID_TREE, context=CONTEXTS)
def test_not_inverts(tree: object, context: object) -> None:
    assume(validate_condition({"not": tree}) == [])
    assert evaluate({"not": tree}, context) is (not evaluate(tree, context))


def test_an_explanation_shortens_a_field_path_of_any_length() -> None:
    name = "x" * 5_000
    (line,) = compile_condition({name: None}).explain({})
    assert line.startswith("x" * 100) and "..." in line and len(line) < 300
