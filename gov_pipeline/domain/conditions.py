"""The condition language: JSON/YAML data compiled into a safe predicate over a change context."""

from __future__ import annotations

import difflib
import math
import operator
import re
import reprlib
from collections.abc import Callable
from datetime import date
from typing import Any, Final, Protocol

from gov_pipeline.domain.entity_fields import FieldSet, ReadableFields
from gov_pipeline.domain.errors import DefinitionError, ValidationIssue

# Semantics (the contract the engine and definition authors rely on):
# - A missing field makes every comparison false, `exists` included; `not` inverts as usual.
# - `exists` is true iff the field resolves to a non-null value.
# - `all: []` is true, `any: []` is false; a null or empty condition is always true.
# - Booleans are not numbers; ints and floats compare with each other; ordering across
#   types (string vs number, null) is false. Dates are compared as ISO-8601 strings.
# - `changed` is true when the field's top-level name (`status` for `new.status`) is in
#   context["changed"]; for a nested field (`new.custom_fields.risk`) old and new must differ too.
#   `changed_to` / `changed_from` also require the new / old value to equal `value` and the
#   other side not to.
# - Field names are checked only when the caller says what can be read (`readable`): the
#   language itself knows no entity. Below `old` / `new` / `entity` / a bare name the first
#   segment must be a field, and a path goes deeper only below a JSON container field.

ROOTS: Final = ("old", "new", "entity", "changed", "actor", "trigger")
VALUE_OPERATORS: Final = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in", "contains")
CHANGE_OPERATORS: Final = ("changed", "changed_to", "changed_from")
OPERATORS: Final = (*VALUE_OPERATORS, "exists", *CHANGE_OPERATORS)
COMPOSITES: Final = ("all", "any", "not")
MAX_PATH_DEPTH: Final = 10  # segments in one field path
MAX_TREE_DEPTH: Final = 32  # nesting of condition nodes (and of literal values)
MAX_NODES: Final = 1000  # condition nodes in one tree
MAX_VALUE_ITEMS: Final = 10_000  # items in all literal values of a tree (YAML aliases explode)
_MAX_EQUAL_DEPTH: Final = 100  # deeper context values compare unequal instead of recursing

_SEGMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX: Final = re.compile(r"[0-9]{1,9}")
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_.]{1,100}")
_MISSING: Final = object()
_KINDS: Final = {
    dict: "mapping",
    list: "list",
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
}


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        # repr() refuses ints past 4300 digits; an explanation must never raise.
        return "<huge integer>" if x.bit_length() > 256 else super().repr_int(x, level)


_repr: Final = _ShortRepr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel = 3


def _kind(value: object) -> str:
    return "null" if value is None else _KINDS.get(type(value), type(value).__name__)


def _key_path(path: str, key: object) -> str:
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{_repr.repr(key)}]"


def _walk(value: object, segments: tuple[str | int, ...]) -> object:
    for seg in segments:
        if isinstance(value, dict):
            key = seg if isinstance(seg, str) else str(seg)
            if key not in value:
                return _MISSING
            value = value[key]
        elif isinstance(value, list | tuple) and isinstance(seg, int) and seg < len(value):
            value = value[seg]
        else:
            return _MISSING
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value


def _equal(a: object, b: object, depth: int = 0) -> bool:
    if a is b:
        return True
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return a == b
    if depth >= _MAX_EQUAL_DEPTH:
        return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k], depth + 1) for k in a)
    return False


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[object, object], bool]:
    def test(actual: object, expected: object) -> bool:
        actual = _plain(actual)
        if _is_number(actual) and _is_number(expected):
            return compare(actual, expected)
        return isinstance(actual, str) and isinstance(expected, str) and compare(actual, expected)

    return test


def _contains(actual: object, expected: object) -> bool:
    if isinstance(actual, list | tuple):
        return any(_equal(item, expected) for item in actual)
    return isinstance(actual, str) and isinstance(expected, str) and expected in actual


def _within(actual: object, expected: object) -> bool:
    return isinstance(expected, list) and any(_equal(actual, item) for item in expected)


_COMPARE: Final[dict[str, Callable[[object, object], bool]]] = {
    "eq": _equal,
    "neq": lambda a, b: not _equal(a, b),
    "gt": _ordering(operator.gt),
    "gte": _ordering(operator.ge),
    "lt": _ordering(operator.lt),
    "lte": _ordering(operator.le),
    "in": _within,
    "not_in": lambda a, b: isinstance(b, list) and not _within(a, b),
    "contains": _contains,
    "exists": lambda a, _: a is not None,
}


class _Field:
    """A parsed field path: rooted (`new.status`) or bare (`status`: new, else entity)."""

    __slots__ = ("bare", "new_path", "old_path", "segments", "text", "top")

    def __init__(self, text: str, segments: tuple[str | int, ...], bare: bool) -> None:
        self.text, self.segments, self.bare = text, segments, bare
        sub = segments if bare else segments[1:]
        in_row = bare or segments[0] in ("old", "new", "entity")
        self.top = sub[0] if in_row and sub and isinstance(sub[0], str) else None
        self.old_path, self.new_path = ("old", *sub), ("new", *sub)

    def get(self, context: object) -> object:
        if not self.bare:
            return _walk(context, self.segments)
        found = _walk(context, self.new_path)
        return _walk(context, ("entity", *self.segments)) if found is _MISSING else found

    def changed(self, context: object) -> bool:
        names = context.get("changed") if isinstance(context, dict) else None
        if self.top is None or not isinstance(names, list | tuple) or self.top not in names:
            return False
        if len(self.new_path) == 2:
            return True
        return not _equal(_walk(context, self.old_path), _walk(context, self.new_path))


class _Node(Protocol):
    def evaluate(self, context: object) -> bool: ...
    def explain(self, context: object) -> list[str]: ...
    def describe(self) -> str: ...
    def fields(self) -> set[str]: ...


class _Leaf:
    __slots__ = ("field", "op", "value")

    def __init__(self, field: _Field, op: str, value: object) -> None:
        self.field, self.op, self.value = field, op, value

    def evaluate(self, context: object) -> bool:
        op, field = self.op, self.field
        if op in CHANGE_OPERATORS:
            if not field.changed(context):
                return False
            if op == "changed":
                return True
            new, old = _walk(context, field.new_path), _walk(context, field.old_path)
            if op == "changed_from":
                new, old = old, new
            return _equal(new, self.value) and not _equal(old, self.value)
        actual = field.get(context)
        return actual is not _MISSING and _COMPARE[op](actual, self.value)

    def explain(self, context: object) -> list[str]:
        if self.evaluate(context):
            return []
        if self.op in CHANGE_OPERATORS:
            if not self.field.changed(context):
                return [f"{self.describe()} (not changed)"]
            old = _walk(context, self.field.old_path)
            new = _walk(context, self.field.new_path)
            return [f"{self.describe()} (changed from {_show(old)} to {_show(new)})"]
        actual = self.field.get(context)
        return [
            f"{self.describe()} ({'missing' if actual is _MISSING else f'was {_show(actual)}'})"
        ]

    def describe(self) -> str:
        if self.op in ("exists", "changed"):
            return f"{_field_shown(self.field.text)} {self.op}"
        return f"{_field_shown(self.field.text)} {self.op} {_repr.repr(self.value)}"

    def fields(self) -> set[str]:
        return {self.field.text}


def _field_shown(text: str, limit: int = 200) -> str:
    """A field path as an explanation shows it: a path can be as long as its definition
    made it, an explanation line stays short."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _show(value: object) -> str:
    return "missing" if value is _MISSING else _repr.repr(value)


class _Group:
    """`all` (true when every child is; empty is true) or `any` (empty is false)."""

    __slots__ = ("children", "kind")

    def __init__(self, kind: str, children: tuple[_Node, ...]) -> None:
        self.kind, self.children = kind, children

    def evaluate(self, context: object) -> bool:
        test = all if self.kind == "all" else any
        return test(child.evaluate(context) for child in self.children)

    def explain(self, context: object) -> list[str]:
        if self.kind == "any" and self.evaluate(context):
            return []
        if not self.children and self.kind == "any":
            return ["any [] (no alternatives: always false)"]
        return [line for child in self.children for line in child.explain(context)]

    def describe(self) -> str:
        return f"{self.kind}(" + ", ".join(child.describe() for child in self.children) + ")"

    def fields(self) -> set[str]:
        return {name for child in self.children for name in child.fields()}


class _Not:
    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child

    def evaluate(self, context: object) -> bool:
        return not self.child.evaluate(context)

    def explain(self, context: object) -> list[str]:
        return [] if self.evaluate(context) else [f"{self.describe()} (it matched)"]

    def describe(self) -> str:
        return f"not ({self.child.describe()})"

    def fields(self) -> set[str]:
        return self.child.fields()


class CompiledCondition:
    """A validated condition tree, ready to evaluate against change contexts."""

    __slots__ = ("_root",)

    def __init__(self, root: _Node) -> None:
        self._root = root

    def evaluate(self, context: object) -> bool:
        """Return whether `context` matches; never raises, whatever the context holds."""
        return self._root.evaluate(context)

    def explain(self, context: object) -> list[str]:
        """Describe the leaves that made the condition false; empty when it matches."""
        return self._root.explain(context)

    def __str__(self) -> str:
        return self._root.describe()


class _BadValueError(Exception):
    pass


def _unknown_field(name: str, fields: FieldSet) -> str:
    shown = _repr.repr(name)
    if name in fields.withheld:
        return (
            f"field {shown} of {fields.owner} is not given to conditions: {fields.withheld[name]}"
        )
    close = difflib.get_close_matches(name, fields.names, n=1)
    listed = f"one of: {', '.join(fields.names)}" if fields.names else "there are none"
    hint = f"did you mean {close[0]!r}?" if close else listed
    return f"unknown field {shown} of {fields.owner} ({hint})"


def _no_sub_fields(name: str, fields: FieldSet) -> str:
    message = f"{_repr.repr(name)} of {fields.owner} has no sub-fields"
    containers = [n for n in fields.names if n in fields.containers]
    return f"{message} (only {', '.join(containers)} do)" if containers else message


class _Compiler:
    """One pass over a raw tree: builds nodes and collects every issue."""

    def __init__(self, readable: ReadableFields | None = None) -> None:
        self.readable = readable
        self.issues: list[ValidationIssue] = []
        self.nodes = 0
        self.values = 0
        self.stopped = False  # a size limit was hit: stop descending

    def issue(self, path: str, message: str) -> None:
        self.issues.append(ValidationIssue(path, message))

    def count(self, path: str, depth: int) -> bool:
        if self.stopped:
            return False
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_TREE_DEPTH:
            too = f"has more than {MAX_NODES} nodes" if depth <= MAX_TREE_DEPTH else "is too deep"
            self.issue(
                path, f"condition {too} (limits: {MAX_NODES} nodes, {MAX_TREE_DEPTH} levels)"
            )
            self.stopped = True
        return not self.stopped

    def node(self, raw: object, path: str, depth: int) -> _Node | None:
        if not self.count(path, depth):
            return None
        if not isinstance(raw, dict):
            self.issue(path, f"expected a condition mapping, got {_kind(raw)}")
            return None
        keys = [key for key in COMPOSITES if key in raw]
        if not keys:
            return self.leaf(raw, path) if "op" in raw or "field" in raw else self.flat(raw, path)
        if len(raw) != 1:
            names = ", ".join(sorted(_repr.repr(k).strip("'") for k in raw))
            self.issue(path, f"a composite node has exactly one key (all/any/not), got: {names}")
            return None
        key = keys[0]
        body, sub = raw[key], f"{path}.{key}"
        if key == "not":
            child = self.node(body, sub, depth + 1)
            return None if child is None else _Not(child)
        if not isinstance(body, list):
            self.issue(sub, f"'{key}' takes a list of conditions, got {_kind(body)}")
            return None
        children = [self.node(item, f"{sub}[{i}]", depth + 1) for i, item in enumerate(body)]
        if any(child is None for child in children):
            return None
        nodes = tuple(child for child in children if child is not None)
        return _Group(key, nodes)

    def leaf(self, raw: dict[Any, Any], path: str) -> _Node | None:
        before = len(self.issues)
        for key in raw:
            if key not in ("field", "op", "value"):
                self.issue(_key_path(path, key), "unknown key (a leaf has field, op, value)")
        field = self.field(raw.get("field", _MISSING), f"{path}.field")
        op, vpath = raw.get("op", _MISSING), f"{path}.value"
        if not isinstance(op, str) or op not in OPERATORS:
            got = "missing 'op'" if op is _MISSING else f"unknown operator {_repr.repr(op)}"
            self.issue(f"{path}.op", f"{got} (one of: {', '.join(OPERATORS)})")
            return None
        value: object = None
        if op in ("exists", "changed"):
            if "value" in raw:
                self.issue(vpath, f"'{op}' takes no value")
        elif "value" not in raw:
            self.issue(vpath, f"'{op}' needs a value")
        else:
            value = self.value(raw["value"], vpath)
            if value is _MISSING:
                pass  # already reported
            elif op in ("in", "not_in") and not isinstance(value, list):
                self.issue(vpath, f"'{op}' needs a list value, got {_kind(value)}")
            elif op in ("gt", "gte", "lt", "lte") and not (
                _is_number(value) or isinstance(value, str)
            ):
                self.issue(vpath, f"'{op}' compares numbers or strings, got {_kind(value)}")
            elif (
                op == "contains"
                and isinstance(value, str)
                and field is not None
                and field.segments == ("changed",)
                and self.readable is not None
                and value not in self.readable.changed.names
            ):
                self.issue(vpath, _unknown_field(value, self.readable.changed))
        if field is not None and op in CHANGE_OPERATORS and field.top is None:
            self.issue(f"{path}.field", f"'{op}' needs a bare name or an old/new/entity field")
        if field is None or len(self.issues) > before:
            return None
        return _Leaf(field, op, value)

    def flat(self, raw: dict[Any, Any], path: str) -> _Node | None:
        before, leaves = len(self.issues), []
        for key, expected in raw.items():
            kpath = _key_path(path, key)
            if not self.count(kpath, 0):
                return None
            field = self.field(key, kpath)
            value = self.value(expected, kpath)
            if field is not None:
                leaves.append(_Leaf(field, "eq", value))
        if len(self.issues) > before:
            return None
        return leaves[0] if len(leaves) == 1 else _Group("all", tuple(leaves))

    def field(self, raw: object, path: str) -> _Field | None:
        if raw is _MISSING:
            self.issue(path, "missing 'field'")
            return None
        if not isinstance(raw, str) or not raw:
            self.issue(path, f"a field must be a non-empty string, got {_kind(raw)}")
            return None
        parts = raw.split(".")
        if len(parts) > MAX_PATH_DEPTH:
            self.issue(path, f"field path deeper than {MAX_PATH_DEPTH} segments")
            return None
        segments: list[str | int] = []
        for part in parts:
            if not (_SEGMENT.fullmatch(part) or _INDEX.fullmatch(part)):
                bad = _repr.repr(part)
                self.issue(path, f"invalid segment {bad}: not a name or a list index")
                return None
            segments.append(int(part) if part.isdigit() else part)
        root = segments[0]
        if len(segments) == 1 and root not in ROOTS:
            if isinstance(root, str):
                return self.known(_Field(raw, (root,), bare=True), path)
            self.issue(path, "a bare field must be a name, not an index")
        elif root not in ROOTS:
            self.issue(path, f"unknown root {_repr.repr(root)} (one of: {', '.join(ROOTS)})")
        elif root in ("actor", "trigger") and len(segments) > 1:
            self.issue(path, f"'{root}' is a string: it has no sub-fields")
        else:
            return self.known(_Field(raw, tuple(segments), bare=False), path)
        return None

    def known(self, field: _Field, path: str) -> _Field:
        """`field`, after reporting it if `readable` says it names no field (the issue alone
        refuses the node, so every other issue of the node is still reported)."""
        readable, segments = self.readable, field.segments
        if readable is None:
            return field
        if field.bare:
            fields, sub = readable.entity, segments
        elif segments[0] in ("old", "new", "entity"):
            roots = {"old": readable.old, "new": readable.new, "entity": readable.entity}
            fields, sub = roots[str(segments[0])], segments[1:]
        else:
            return field  # `changed`, `actor`, `trigger`: not fields of anything
        name = sub[0] if sub else None  # no name: the whole mapping
        if field.bare and name in fields.withheld:
            return field  # a bare name reads `new` first, which holds it when it changed
        if name is not None and (not isinstance(name, str) or name not in fields.names):
            self.issue(path, _unknown_field(str(name), fields))
        elif len(sub) > 1 and name not in fields.containers:
            self.issue(path, _no_sub_fields(str(name), fields))
        return field

    def value(self, raw: object, path: str) -> object:
        try:
            return self.normalize(raw, 0)
        except _BadValueError as exc:
            self.issue(path, str(exc))
            return _MISSING

    def normalize(self, raw: object, depth: int) -> object:
        self.values += 1
        if self.values > MAX_VALUE_ITEMS or depth > MAX_TREE_DEPTH:
            limits = f"limits: {MAX_VALUE_ITEMS} items, depth {MAX_TREE_DEPTH}"
            raise _BadValueError(f"value too large or too deeply nested ({limits})")
        if isinstance(raw, int) and raw.bit_length() > 64:
            raise _BadValueError("integer out of range (64 bits)")
        if isinstance(raw, float) and not math.isfinite(raw):
            # Stored JSON has no NaN or infinity: it would come back as null, another meaning.
            raise _BadValueError(f"not a finite number: {raw}")
        if raw is None or isinstance(raw, str | int | float):
            return raw
        if isinstance(raw, date):
            return raw.isoformat()
        if isinstance(raw, list | tuple):
            return [self.normalize(item, depth + 1) for item in raw]
        if isinstance(raw, dict):
            if not all(isinstance(key, str) for key in raw):
                raise _BadValueError("mapping keys inside a value must be strings")
            return {key: self.normalize(item, depth + 1) for key, item in raw.items()}
        raise _BadValueError(f"unsupported value type {type(raw).__name__}")


def _compile(
    node: object, path: str, readable: ReadableFields | None
) -> tuple[_Node | None, list[ValidationIssue]]:
    if node is None:
        return _Group("all", ()), []
    compiler = _Compiler(readable)
    root = compiler.node(node, path, 1)
    return root, compiler.issues


def compile_condition(
    node: object, path: str = "conditions", readable: ReadableFields | None = None
) -> CompiledCondition:
    """Validate a whole condition tree and compile it.

    Args:
        node: the raw tree (leaf, `all`/`any`/`not`, shorthand map, `{}` or None).
        path: the dotted prefix for issue paths.
        readable: the field names the tree may read; None checks no names.

    Returns:
        The compiled condition; None and `{}` compile to "always true".

    Raises:
        DefinitionError: listing every issue in the tree.
    """
    root, issues = _compile(node, path, readable)
    if root is None or issues:
        raise DefinitionError(issues or [ValidationIssue(path, "invalid condition")])
    return CompiledCondition(root)


def validate_condition(
    node: object, path: str = "conditions", readable: ReadableFields | None = None
) -> list[ValidationIssue]:
    """Return every issue in a condition tree (empty when valid); never raises.

    Args:
        node: the raw tree.
        path: the dotted prefix for issue paths.
        readable: the field names the tree may read; None checks no names.

    Returns:
        The issues, each with the path of the offending node.
    """
    root, issues = _compile(node, path, readable)
    return issues if issues or root is not None else [ValidationIssue(path, "invalid condition")]


def condition_fields(compiled: CompiledCondition) -> set[str]:
    """Return the field paths a condition reads, as written in the definition.

    Args:
        compiled: a compiled condition.

    Returns:
        The field paths (bare names stay bare).
    """
    return compiled._root.fields()
