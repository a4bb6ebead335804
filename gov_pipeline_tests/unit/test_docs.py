"""The documentation says what the code does: every `gov-pipeline` command line in the README
and docs/ names real commands and options, the coordinator table of the operations guide
matches the shipped dagster.yaml, and the entity types of the workflow reference (their
fields, lifecycles, tables, dates, owners and lanes) are those of domain/entities.py and
domain/lifecycle.py."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import click
import yaml

from gov_pipeline.cli.app import cli
from gov_pipeline.coordinator.queue import DEFAULT_LANES
from gov_pipeline.domain.entities import KINDS
from gov_pipeline.domain.lifecycle import LIFECYCLES

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Mentions of the program that are not command lines (in diagrams and the layout).
PROSE = ("gov-pipeline command line", "gov-pipeline CLI,")


def _command_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text from `gov-pipeline` on) of each command line: in fenced blocks up
    to a comment or `|`, elsewhere inside inline code only."""
    found = []
    fenced = False
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            while line.endswith("\\") and number < len(lines):  # a continued shell line
                line = line[:-1] + " " + lines[number]
                number += 1
            spans = [re.split(r"(?:^|\s)#", line)[0]]
        else:
            spans = re.findall(r"`([^`]*)`", line)
        for span in spans:
            for match in re.finditer(r"gov-pipeline(?= )[^|`]*", span):
                found.append((number, match.group(0).strip()))
    return found


def _problems(command_line: str) -> list[str]:
    """What in `command_line` the CLI does not have: an unknown command or option."""
    command: click.Command = cli
    words = command_line.split()[1:]
    for position, raw in enumerate(words):
        word = raw.strip("[](),;")
        if isinstance(command, click.Group) and not word.startswith("-"):
            if word in ("...", ""):
                return []
            sub = command.commands.get(word)
            if sub is None:
                return [f"no command {word!r} in {' '.join(['gov-pipeline', *words[:position]])}"]
            command = sub
            continue
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if option not in known | {"-h", "--help"}:
                return [f"{command.name} has no option {option}"]
    return []


def test_every_documented_command_line_names_real_commands_and_options() -> None:
    checked, wrong = 0, []
    for path in DOCS:
        for number, command_line in _command_lines(path):
            if command_line.startswith(PROSE):
                continue
            checked += 1
            wrong += [
                f"{path.relative_to(ROOT)}:{number}: {command_line}: {p}"
                for p in _problems(command_line)
            ]
    assert checked > 50
    assert wrong == []


def _coordinator_table() -> dict[str, str]:
    """`run_coordinator` key -> its "shipped value" cell, from the operations guide."""
    text = (ROOT / "docs" / "operations.md").read_text()
    header = "| key | default in code | shipped value | meaning |"
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    table = {}
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        table[cells[0].strip("`")] = cells[2]
    return table


def test_the_coordinator_table_gives_the_shipped_dagster_yaml_values() -> None:
    shipped: dict[str, Any] = yaml.safe_load((ROOT / "dagster.yaml").read_text())[
        "run_coordinator"
    ]["config"]
    table = _coordinator_table()
    assert set(shipped) <= set(table)
    for key, cell in table.items():
        if cell.startswith("not set"):
            assert key not in shipped, (key, cell)
            continue
        assert key in shipped, (key, cell)
        if key == "lanes":
            assert cell.startswith("the same eight") and shipped[key] == DEFAULT_LANES
            continue
        literal = re.match(r"`([^`]*)`|(\S+)", cell)
        assert literal is not None
        assert yaml.safe_load(literal.group(1) or literal.group(2)) == shipped[key], (key, cell)


CODE_PATH = re.compile(r"gov_pipeline/[a-z_/]+\.py")
CODE_NAME = re.compile(r"\bgov_pipeline(?:\.[a-z_][a-z0-9_]*)+(?:\.[A-Za-z_][A-Za-z0-9_]*)?")


def test_every_module_and_file_the_docs_name_exists() -> None:
    """A file moved or renamed must take the docs with it."""

    root = Path(__file__).resolve().parents[2]
    missing = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        for path in CODE_PATH.findall(text):
            if not (root / path).is_file():
                missing.append(f"{doc.name}: {path}")
        for dotted in CODE_NAME.findall(text):
            parts = dotted.rstrip(".").split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    found: object = importlib.import_module(".".join(parts[:cut]))
                except ModuleNotFoundError:
                    continue
                for attr in parts[cut:]:
                    found = getattr(found, attr, None)
                if found is None:
                    missing.append(f"{doc.name}: {dotted}")
                break
    assert not missing, missing


# -- docs/workflows.md, "Entity types": the registry and the lifecycles, as documented -------

ENTITY_TYPES_HEADING = "## Entity types"
COMMON_FIELDS_HEADING = "Fields every type has"
SUMMARY_HEADER = "| entity type | table | CLI group |"
FIELDS_HEADER = "| field | type | notes |"
LIFECYCLE_HEADER = "| from | allowed to |"
NONE = "—"


def _entity_types_section(text: str) -> dict[str, str]:
    """The "Entity types" section of workflows.md: its introduction (key "") and each of its
    `###` subsections by title."""
    body = text.split(f"\n{ENTITY_TYPES_HEADING}\n", 1)[1].split("\n## ", 1)[0]
    intro, *subsections = body.split("\n### ")
    parts = {"": intro}
    for subsection in subsections:
        title, _, rest = subsection.partition("\n")
        parts[title.strip()] = rest
    return parts


def _table(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the first table of `text` whose header starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # after the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _names(cell: str) -> list[str]:
    """The names in backticks in `cell`, leaving out its parenthesised remarks
    (`draft` (changes requested) -> draft)."""
    return re.findall(r"`([a-z_]+)`", re.sub(r"\([^()]*\)", "", cell))


def _only(cell: str) -> str:
    (name,) = _names(cell)
    return name


def lifecycle_problems(text: str) -> list[str]:
    """How the lifecycle tables of workflows.md's "Entity types" differ from `LIFECYCLES`."""
    parts = _entity_types_section(text)
    problems = []
    for entity_type, lifecycle in LIFECYCLES.items():
        part = parts.get(str(entity_type))
        if part is None:
            problems.append(f"{entity_type}: no subsection")
            continue
        documented: dict[str, set[str]] = {}
        for source, targets in _table(part, LIFECYCLE_HEADER):
            documented[_only(source)] = set() if targets == NONE else set(_names(targets))
        expected = {status: set(moves) for status, moves in lifecycle.transitions.items()}
        if documented != expected:
            problems.append(f"{entity_type}: documented {documented}, in the code {expected}")
        starts = re.search(r"starts as `([a-z_]+)`", part)
        back = re.search(r"sends it back to\s+`([a-z_]+)`", part)
        if starts is None or starts.group(1) != lifecycle.initial:
            problems.append(f"{entity_type}: starts as {lifecycle.initial}")
        if back is None or back.group(1) != lifecycle.revise_to:
            problems.append(
                f"{entity_type}: changes requested sends it back to {lifecycle.revise_to}"
            )
    return problems


def field_problems(text: str) -> list[str]:
    """How the field tables of workflows.md's "Entity types" differ from `KINDS`: the fields
    (the common ones and the type's own), and which are required, read-only and JSON."""
    parts = _entity_types_section(text)
    common = {_only(row[0]): row for row in _table(parts[COMMON_FIELDS_HEADING], FIELDS_HEADER)}
    problems = []
    for entity_type, kind in KINDS.items():
        part = parts.get(str(entity_type))
        if part is None:
            problems.append(f"{entity_type}: no subsection")
            continue
        own = {_only(row[0]): row for row in _table(part, FIELDS_HEADER)}
        if own.keys() & common.keys():
            problems.append(f"{entity_type}: {sorted(own.keys() & common.keys())} listed twice")
        rows = {**common, **own}
        if set(rows) != set(kind.columns):
            problems.append(
                f"{entity_type}: documented {sorted(rows)}, columns {sorted(kind.columns)}"
            )
        for name, (_, type_, notes) in rows.items():
            marks = {
                "required": (notes.startswith("required"), name in kind.required),
                "read-only": (notes.startswith("read-only"), name in kind.read_only),
                "JSON": ("(JSON)" in type_, name in kind.containers),
            }
            problems += [
                f"{entity_type}.{name}: {mark} is {code} in the code"
                for mark, (documented, code) in marks.items()
                if documented != code
            ]
    return problems


def summary_problems(text: str) -> list[str]:
    """How the summary table of workflows.md's "Entity types" differs from `KINDS`."""
    rows = _table(_entity_types_section(text)[""], SUMMARY_HEADER)
    documented = {
        _only(row[0]): (
            _only(row[1]), _only(row[2]), set(_names(row[3])), _only(row[4]), _only(row[5]),
            _only(row[6]),
        )
        for row in rows
    }  # fmt: skip
    expected = {
        str(t): (k.table, k.command, set(k.always), k.deadline_field, k.owner_field, k.default_lane)
        for t, k in KINDS.items()
    }
    return [] if documented == expected else [f"documented {documented}, in the code {expected}"]


WORKFLOWS_DOC = ROOT / "docs" / "workflows.md"


def test_the_documented_lifecycles_are_those_of_the_code() -> None:
    assert lifecycle_problems(WORKFLOWS_DOC.read_text()) == []


def test_the_documented_fields_of_each_entity_type_are_its_columns() -> None:
    assert field_problems(WORKFLOWS_DOC.read_text()) == []


def test_the_entity_types_table_gives_each_types_table_group_dates_owner_and_lane() -> None:
    assert summary_problems(WORKFLOWS_DOC.read_text()) == []


def test_the_checks_find_a_status_or_field_the_docs_do_not_have() -> None:
    """A status or a column added to the code but not to the docs fails the tests above."""
    text = WORKFLOWS_DOC.read_text()
    no_reopening = text.replace("| `closed` | `identified` (reopened) |", "| `closed` | — |")
    assert no_reopening != text and lifecycle_problems(no_reopening) != []
    no_terminal_row = text.replace("| `cancelled` | — |\n", "")
    assert no_terminal_row != text and lifecycle_problems(no_terminal_row) != []
    no_score = re.sub(r"\| `risk_score` \|[^\n]*\n", "", text)
    assert no_score != text and field_problems(no_score) != []
    no_deleted_at = re.sub(r"\| `deleted_at` \|[^\n]*\n", "", text)
    assert no_deleted_at != text and len(field_problems(no_deleted_at)) == len(KINDS)


# -- docs/workflows.md, "Validation errors": each bad file reports what the text block shows --


def _validation_examples() -> list[tuple[str, list[str]]]:
    """(YAML, documented issue lines) of each yaml block followed by a text block in the
    "Validation errors" section of workflows.md."""
    text = WORKFLOWS_DOC.read_text()
    section = text.split("\n## Validation errors\n", 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"```yaml\n(.*?)```\s*```text\n(.*?)```", section, flags=re.S)
    return [(source, lines.strip().splitlines()) for source, lines in pairs]


def test_each_documented_bad_definition_reports_exactly_the_documented_issues() -> None:
    from gov_pipeline.domain.definitions import parse_definition
    from gov_pipeline.domain.errors import DefinitionError

    examples = _validation_examples()
    assert len(examples) == 3  # the three files the section introduces
    for source, documented in examples:
        try:
            parse_definition(yaml.safe_load(source))
        except DefinitionError as err:
            assert [str(issue) for issue in err.issues] == documented
        else:
            raise AssertionError(f"documented as invalid, but parses:\n{source}")
