"""The documentation says what the code does: every `gov-pipeline` command line in the README
and docs/ names real commands and options, and the coordinator table of the operations guide
matches the shipped dagster.yaml."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import click
import yaml

from gov_pipeline.cli.app import cli
from gov_pipeline.coordinator.queue import DEFAULT_LANES

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
