"""Hostile input for definitions and conditions: generated documents are either accepted or
refused with DefinitionError (never another exception), and conditions are data, never code."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gov_pipeline.domain.conditions import OPERATORS, compile_condition, validate_condition
from gov_pipeline.domain.definitions import (
    ACTION_TYPES,
    WorkflowDefinition,
    load_definitions,
    parse_definition,
)
from gov_pipeline.domain.entity_fields import ReadableFields, readable_fields
from gov_pipeline.domain.errors import DefinitionError
from gov_pipeline.domain.statuses import EntityType, Trigger

# The generated documents are large on purpose; hypothesis warns about their repr.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- building blocks -------------------------------------------------------------------------

ODD_CHARS = (
    "\u202e\u200f\u200e\u2066\u2069"  # bidi overrides and marks
    "\u0301\u0308\u20dd"  # combining marks
    "\U0001f600\U0001f3f3\ufe0f\u200d\U0001f308"  # emoji, a ZWJ sequence
    "\x00\x1b\x7f\ufeff\ufffd\u2028\u2029"  # NUL, ESC, DEL, BOM, replacement, separators
    "\ud800\udfff"  # lone surrogates (what a JSON "\ud800" escape gives)
    "\u0645\u05d0\u4e2d\u00e9"  # Arabic, Hebrew, CJK, Latin-1
)
ODD_TEXT = st.text(alphabet=st.sampled_from(ODD_CHARS) | st.characters(), max_size=30)
HUGE_TEXT = st.sampled_from(
    ["x" * 20_000, "\u202e" * 5_000, "e\u0301" * 6_000, "\U0001f600" * 3_000, "a\x00" * 500]
)
CODE_LIKE = st.sampled_from(
    [
        "__import__('os').system('true')",
        "{{ 7*7 }}",
        "${7*7}",
        "lambda: 1",
        "eval('1')",
        "exec('x=1')",
        "!!python/object/apply:os.system ['true']",
        "{entity.__class__.__mro__}",
        "__class__",
        "os.system",
        "'; DROP TABLE policies; --",
    ]
)
STRINGS = ODD_TEXT | HUGE_TEXT | CODE_LIKE
NUMBERS = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 1, 2**64, -(2**64), 10**30])
)
SCALARS = (
    st.none()
    | st.booleans()
    | NUMBERS
    | STRINGS
    | st.dates()
    | st.datetimes()
    | st.binary(max_size=8)
    | st.sampled_from(["draft", "in_review", "acme", "notify", "on_update", "approval", "admin"])
)
# Keys a parsed document may hold: odd strings, and what YAML gives for `1:`, `null:`, `true:`.
KEYS = (
    st.sampled_from(["name", "type", "value", "field", "op", "all", "any", "not", "users"])
    | ODD_TEXT
    | st.integers(-3, 3)
    | st.none()
    | st.booleans()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(KEYS, inner, max_size=4)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=20,
)


def nested(depth: int, leaf: object, kind: str) -> object:
    """`leaf` wrapped `depth` times in a list, a mapping or a `not` node."""
    node = leaf
    for _ in range(depth):
        node = {"not": node} if kind == "not" else {"all": [node]} if kind == "all" else [node]
    return node


DEEP = st.builds(
    nested,
    st.integers(0, 400),
    st.just({"field": "new.status", "op": "eq", "value": "draft"}) | SCALARS,
    st.sampled_from(["not", "all", "list"]),
)

# -- conditions -------------------------------------------------------------------------------

FIELD_NAMES = st.sampled_from(
    [
        *("status", "new.status", "old.status", "entity.owner_id", "entity.tags.0"),
        *("new.custom_fields.risk", "changed", "actor", "trigger", "entity.a.b.c.d.e.f"),
        *("new.999999999", "new.1234567890", "policy.owner_id", "new..status", "new.__class__"),
        *("entity.__dict__", ".", "", "new.status ", "a.b.c.d.e.f.g.h.i.j.k", "actor.name"),
        # What the field check tells apart: a field, a path below a JSON field or below
        # another one, a typo, a decision's field (on_approval_decided only).
        *("entity.custom_fields.a.b", "new.business_units.0", "entity.status.x", "staus"),
        *("new.staus", "new.decision", "old.approval_status", "entity.decided_by", "content"),
    ]
)
FIELDS_AS_TEXT = FIELD_NAMES | STRINGS
FIELDS = FIELDS_AS_TEXT | SCALARS
OPS = st.sampled_from([*OPERATORS, "EQ", "is", "__eq__", "matches", "regex", "eval", "", " eq"])
OPS = OPS | SCALARS
LEAVES = st.fixed_dictionaries(
    {"field": FIELDS, "op": OPS},
    optional={"value": VALUES, "extra": VALUES, "__class__": VALUES},
)
SHORTHAND = st.dictionaries(FIELDS_AS_TEXT, VALUES, max_size=4)
CONDITIONS = (
    st.recursive(
        LEAVES | SHORTHAND | SCALARS,
        lambda inner: (
            st.lists(inner, max_size=4).map(lambda c: {"all": c})
            | st.lists(inner, max_size=4).map(lambda c: {"any": c})
            | inner.map(lambda c: {"not": c})
            | st.tuples(inner, inner).map(lambda p: {"all": [p[0]], "any": [p[1]]})
            | inner.map(lambda c: {"all": c})
        ),
        max_leaves=15,
    )
    | DEEP
)

ROW = st.dictionaries(
    st.sampled_from(["status", "owner_id", "tags", "custom_fields", "a", "__class__"]) | ODD_TEXT,
    VALUES | DEEP,
    max_size=5,
)
FACTS = (
    st.fixed_dictionaries(
        {},
        optional={
            "old": ROW | VALUES,
            "new": ROW | VALUES,
            "entity": ROW | VALUES,
            "changed": st.lists(st.sampled_from(["status", "tags", "owner_id", "a"])) | VALUES,
            "actor": STRINGS | VALUES,
            "trigger": st.sampled_from(["on_update", "manual"]) | VALUES,
        },
    )
    | VALUES
)


@FUZZ
@given(node=CONDITIONS, facts=FACTS)
def test_hostile_conditions_compile_or_refuse_and_evaluation_never_crashes(
    node: object, facts: object
) -> None:
    try:
        compiled = compile_condition(node)
    except DefinitionError as exc:
        assert exc.issues and all(isinstance(issue.message, str) for issue in exc.issues)
        assert validate_condition(node) == exc.issues
        return
    assert validate_condition(node) == []
    result = compiled.evaluate(facts)
    assert isinstance(result, bool)
    reasons = compiled.explain(facts)
    assert (reasons == []) is result
    assert all(isinstance(line, str) and len(line) < 2_000 for line in reasons)
    assert isinstance(str(compiled), str)


READABLE = st.sampled_from([readable_fields(e, t) for e in EntityType for t in Trigger])
CHANGED_NAMES = st.sampled_from(["content", "contnet", "approval_status", "__class__", ""])


@FUZZ
@given(
    node=CONDITIONS
    | st.builds(lambda v: {"field": "changed", "op": "contains", "value": v}, CHANGED_NAMES),
    facts=FACTS,
    readable=READABLE,
)
def test_hostile_conditions_with_field_names_checked_compile_or_refuse(
    node: object, facts: object, readable: ReadableFields
) -> None:
    """The field check only ever adds refusals, as DefinitionError issues."""
    try:
        compiled = compile_condition(node, "conditions", readable)
    except DefinitionError as exc:
        assert exc.issues and all(isinstance(issue.message, str) for issue in exc.issues)
        assert all(len(issue.message) < 2_000 for issue in exc.issues)
        assert validate_condition(node, "conditions", readable) == exc.issues
        assert set(validate_condition(node)) <= set(exc.issues)
        return
    assert validate_condition(node, "conditions", readable) == []
    unchecked = compile_condition(node)
    assert compiled.evaluate(facts) is unchecked.evaluate(facts)
    assert compiled.explain(facts) == unchecked.explain(facts)


# -- definitions ------------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "name": "Fuzzed",
    "tenant_id": "acme",
    "type": "notification",
    "trigger": "on_status_change",
    "conditions": {"field": "new.status", "op": "changed_to", "value": "in_review"},
    "actions": [{"type": "notify", "users": ["u1"], "title": "t"}],
}
TOP_KEYS = st.sampled_from(
    [
        *("name", "description", "tenant_id", "type", "status", "trigger", "entity_type"),
        *("conditions", "actions", "days_before_deadline", "priority", "owner_id", "version"),
        *("id", "__proto__", "Name", "actions "),
    ]
)
ACTION_KEYS = st.sampled_from(
    [
        *("type", "id", "to", "reason", "users", "roles", "include_owner", "title", "message"),
        *("user", "target", "due_in_days", "due_date", "assignee", "url", "timeout_seconds"),
        *("secret_env", "max_attempts", "steps", "mode", "on_approved", "on_rejected", "priority"),
        *("notification_type", "description", "on_changes_requested", "command", "unsigned"),
    ]
)
ACTION_VALUES = (
    st.sampled_from([*ACTION_TYPES, "send_email", "shell", "python", "Notify", ""])
    | st.sampled_from(
        [
            "http://127.0.0.1:8765/x",
            "https://user:pw@hooks.example.com/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://[::1]:99999/",
            "http://exa mple.com/",
            "gopher://x",
            "http://\u202eexample.com/",
        ]
    )
    | st.lists(st.sampled_from(["admin", "u1", "ciso", "", "\x00"]), max_size=3)
    | st.just([{"approvers": {"users": ["u1"]}}])
    | st.just([{"type": "request_approval", "steps": [{"approvers": {"roles": ["admin"]}}]}])
    | VALUES
)
ACTIONS = st.dictionaries(ACTION_KEYS, ACTION_VALUES, max_size=6) | st.builds(
    lambda extra, kind: {**VALID["actions"][0], "type": kind, **extra},
    st.dictionaries(ACTION_KEYS, ACTION_VALUES, max_size=3),
    st.sampled_from(ACTION_TYPES),
)
NAMES = st.text(
    alphabet=st.sampled_from(
        ODD_CHARS.replace("\x00", "").replace("\ud800", "").replace("\udfff", "")
    )
    | st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
)
VALID_ACTIONS = st.one_of(
    st.builds(lambda t, m, u: {"type": "notify", "users": [u], "title": t, "message": m},
              NAMES, NAMES, NAMES),
    st.builds(lambda t, d: {"type": "create_task", "title": t, "description": d, "due_in_days": 3},
              NAMES, NAMES),
    st.builds(lambda to, r: {"type": "change_status", "to": to, "reason": r},
              st.sampled_from(["draft", "in_review", "approved", "published", "archived"]), NAMES),
    st.builds(lambda u: {"type": "assign", "user": u, "target": "assignee"}, NAMES),
    st.builds(lambda path, signing: {"type": "webhook", "url": "https://hooks.example.com/" + path,
                                     **signing},
              st.text(alphabet="abc%/?=&#é\u202e", max_size=30),
              st.sampled_from([{}, {"secret_env": "HOOK_KEY"}, {"unsigned": True}])),
)  # fmt: skip
TOP_VALUES = (
    st.sampled_from(
        [
            "approval",
            "notification",
            "escalation",
            "on_update",
            "manual",
            "on_deadline_approaching",
            "active",
            "archived",
            "policy",
            "risk",
            "acme corp",
        ]
    )
    | st.lists(ACTIONS, max_size=4)
    | CONDITIONS
    | VALUES
)
DEFINITIONS = (
    st.builds(lambda extra: {**VALID, **extra}, st.dictionaries(TOP_KEYS, TOP_VALUES, max_size=4))
    | st.builds(
        lambda actions, drop: {k: v for k, v in {**VALID, "actions": actions}.items() if k != drop},
        st.lists(ACTIONS | VALID_ACTIONS, max_size=4),
        st.sampled_from(["", "name", "tenant_id", "type", "trigger", "conditions"]),
    )
    | st.dictionaries(TOP_KEYS | KEYS, TOP_VALUES, max_size=8)
    | VALUES
    | DEEP
)


def check_accepted(definition: WorkflowDefinition) -> None:
    """What the engine does with an accepted definition must not crash either."""
    dumped = definition.model_dump(mode="json")
    text = json.dumps(dumped, allow_nan=False)  # what the database stores: strict JSON
    assert "\x00" not in text and "\\u0000" not in text
    json.dumps(dumped, ensure_ascii=False).encode("utf-8")  # no lone surrogate anywhere
    assert parse_definition(json.loads(text)).fingerprint() == definition.fingerprint()
    condition = definition.compiled_conditions()
    for facts in ({}, {"new": {"status": "in_review"}, "changed": ["status"]}, None):
        assert isinstance(condition.evaluate(facts), bool)
        condition.explain(facts)


@FUZZ
@given(data=DEFINITIONS)
def test_hostile_definitions_are_accepted_or_refused_with_definition_error(data: object) -> None:
    try:
        definition = parse_definition(data, source="fuzz")
    except DefinitionError as exc:
        assert exc.issues and str(exc).startswith("fuzz: ")
        return
    assert isinstance(definition, WorkflowDefinition)
    check_accepted(definition)


def _yaml_text(data: object) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, RecursionError):
        return repr(data)  # not representable: its repr is still a hostile document


YAML_SNIPPETS = st.sampled_from(
    [
        "2024-99-99",
        "created: 2024-02-30",
        "x: !!timestamp 2020-01-01T99:99:99",
        "x: !!int abc",
        "x: !!float abc",
        "x: !!binary ZZZ",
        "x: " + "9" * 5000,
        "x: !!python/object/apply:os.system ['true']",
        "!!python/name:os.system",
        "a: &a [*a]",
        "a: &a {b: *a}\nname: x",
        'a: &a ["x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\n'
        "conditions: {field: new.title, op: in, value: [*c,*c,*c,*c,*c,*c,*c,*c,*c]}",
        "[" * 5000,
        "{" * 5000,
        "- " * 3000 + "x",
        "? [a, b]\n: c",
        "x: \ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
        "%YAML 9.9\n---\nx: 1",
        "--- a\n--- b",
        "\t- tab",
        "",
        "null",
        "~",
    ]
)
JSON_SNIPPETS = st.sampled_from(
    [
        '{"x": ' + "9" * 5000 + "}",
        '{"x": NaN, "y": Infinity}',
        '{"x": 1e99999}',
        "[" * 5000,
        '{"a": 1, "a": 2}',
        '"\\ud800"',
        "{'single': 'quotes'}",
        "",
        "null",
    ]
)


@FUZZ
@given(
    document=st.one_of(
        st.tuples(DEFINITIONS.map(_yaml_text) | YAML_SNIPPETS | ODD_TEXT, st.just("yaml")),
        st.tuples(
            DEFINITIONS.map(lambda d: json.dumps(d, default=str)) | JSON_SNIPPETS | ODD_TEXT,
            st.just("json"),
        ),
        st.tuples(ODD_TEXT, st.sampled_from(["toml", "", "YAML"])),
    )
)
def test_hostile_documents_load_or_refuse_with_definition_error(document: tuple[str, str]) -> None:
    text, fmt = document
    try:
        definitions = load_definitions(text, fmt, "fuzz.doc")
    except DefinitionError as exc:
        assert exc.issues and exc.source == "fuzz.doc"
        return
    for definition in definitions:
        check_accepted(definition)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("2024-99-99", "yaml"),
        ("name: x\ncreated: 2024-02-30", "yaml"),
        ("x: !!int abc", "yaml"),
        ("x: " + "9" * 5000, "yaml"),
        ('{"x": ' + "9" * 5000 + "}", "json"),
    ],
)
def test_values_the_parsers_cannot_convert_are_syntax_errors(text: str, fmt: str) -> None:
    with pytest.raises(DefinitionError, match=f"invalid {fmt.upper()}"):
        load_definitions(text, fmt, "doc")


@pytest.mark.parametrize(
    ("conditions", "path"),
    [
        ({"field": "new.version_number", "op": "eq", "value": math.nan}, "conditions.value"),
        ({"field": "new.version_number", "op": "in", "value": [1, math.inf]}, "conditions.value"),
        ({"new.version_number": -math.inf}, "conditions.new.version_number"),
    ],
)
def test_a_non_finite_number_in_a_condition_is_refused(conditions: object, path: str) -> None:
    # Stored JSON cannot hold NaN or infinity; they would come back as null, another meaning.
    with pytest.raises(DefinitionError) as err:
        parse_definition({**VALID, "conditions": conditions})
    assert [issue.path for issue in err.value.issues] == [path]
    assert "finite" in err.value.issues[0].message


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({**VALID, "name": "bad\x00name"}, "name"),
        ({**VALID, "description": "a\x00"}, "description"),
        (
            {**VALID, "conditions": {"field": "new.title", "op": "eq", "value": "\x00"}},
            "conditions",
        ),
        ({**VALID, "actions": [{"type": "notify", "users": ["u\x00"], "title": "t"}]}, "actions"),
        (
            {**VALID, "conditions": {"field": "new.title", "op": "eq", "value": "\ud800"}},
            "conditions",
        ),
        (
            {**VALID, "conditions": {"field": "new.title", "op": "in", "value": ["a\udfff"]}},
            "conditions",
        ),
    ],
)
def test_text_a_database_cannot_store_is_refused_anywhere(data: dict[str, Any], path: str) -> None:
    # PostgreSQL text and jsonb cannot hold NUL, and a lone surrogate is not UTF-8: refused
    # here with the path, not by the database later.
    with pytest.raises(DefinitionError) as err:
        parse_definition(data)
    assert any(
        i.path.startswith(path) and ("NUL" in i.message or "surrogate" in i.message)
        for i in err.value.issues
    )


# -- never code execution ---------------------------------------------------------------------


def _payloads(sentinel: Path) -> list[str]:
    target = str(sentinel)
    return [
        f"__import__('os').system('touch {target}')",
        f"__import__('pathlib').Path('{target}').touch()",
        f"{{{{ ''.__class__.__mro__[1].__subclasses__() }}}} {{{{ open('{target}', 'w') }}}}",
        f"${{open('{target}', 'w')}}",
        f"lambda: open('{target}', 'w')",
        f"exec(\"open('{target}', 'w')\")",
        f"eval(\"open('{target}', 'w')\")",
        f"{{entity.__init__.__globals__}} open('{target}', 'w')",
    ]


def test_code_like_payloads_are_compared_as_literal_strings(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    for payload in _payloads(sentinel):
        for op in ("eq", "neq", "contains", "gt", "in"):
            value: object = [payload] if op == "in" else payload
            compiled = compile_condition({"field": "new.title", "op": op, "value": value})
            matches = {"new": {"title": payload}, "changed": ["title"]}
            other = {"new": {"title": "Access control"}, "changed": ["title"]}
            expected = {
                "eq": (True, False),
                "neq": (False, True),
                "contains": (True, False),
                "gt": (False, payload < "Access control"),
                "in": (True, False),
            }
            assert (compiled.evaluate(matches), compiled.evaluate(other)) == expected[op]
            compiled.explain(other)
            assert str(compiled).count("new.title") == 1
        shorthand = compile_condition({"new.title": payload})
        assert shorthand.evaluate({"new": {"title": payload}}) is True
        assert shorthand.evaluate({"new": {"title": "7"}}) is False  # no template was rendered
        definition = parse_definition(
            {
                **VALID,
                "description": payload,
                "conditions": {"new.title": payload},
                "actions": [
                    {"type": "notify", "users": ["u1"], "title": payload[:200], "message": payload}
                ],
            }
        )
        assert definition.description == payload
        check_accepted(definition)
    assert not sentinel.exists()


def test_code_like_field_paths_and_operators_are_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    for payload in _payloads(sentinel):
        for node in (
            {"field": payload, "op": "eq", "value": 1},
            {"field": "new.title", "op": payload, "value": 1},
            {payload: 1},
            {"all": payload},
            {"not": payload},
        ):
            with pytest.raises(DefinitionError):
                compile_condition(node)
        with pytest.raises(DefinitionError):
            parse_definition(
                {**VALID, "actions": [{"type": payload, "users": ["u1"], "title": "t"}]}
            )
        with pytest.raises(DefinitionError):
            load_definitions(f"x: !!python/object/apply:os.system ['{payload}']", "yaml", "doc")
    for dunder in ("new.__class__", "entity.__dict__", "__import__", "new.__globals__"):
        compiled = compile_condition({"field": dunder, "op": "exists"})
        assert compiled.evaluate({"new": {"status": "x"}, "entity": {"id": 1}}) is False
    assert not sentinel.exists()


def test_yaml_python_tags_are_refused_and_run_nothing(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    for tag in ("python/object/apply:os.system", "python/object/new:os.system"):
        document = f"name: !!{tag} ['touch {sentinel}']\n" + yaml.safe_dump(
            {k: v for k, v in VALID.items() if k != "name"}
        )
        with pytest.raises(DefinitionError, match="invalid YAML"):
            load_definitions(document, "yaml", "doc")
    assert not sentinel.exists()


def test_accepted_values_keep_their_type() -> None:
    """Dates, big integers and odd text in a condition are literals that survive storage."""
    conditions = {
        "all": [
            {"field": "entity.next_review_date", "op": "lt", "value": date(2030, 1, 1)},
            {"field": "entity.version_number", "op": "lte", "value": 2**63 - 1},
            {"field": "entity.title", "op": "neq", "value": "\u202eevil\u0301\U0001f600"},
        ]
    }
    definition = parse_definition({**VALID, "conditions": conditions})
    check_accepted(definition)
    facts = {"entity": {"next_review_date": "2029-12-31", "version_number": 3, "title": "x"}}
    assert definition.compiled_conditions().evaluate(facts) is True
