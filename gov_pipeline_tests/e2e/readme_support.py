"""Running the README's command blocks as written: finding them, running a sequence of them in
one bash session, and comparing `console` transcripts with what the commands printed.

The marking, as the README states it: a ```bash block is run as written under `bash -e`
(every command must exit 0); a ```console block is a transcript, each `$ ` line a command
whose output must look like the lines under it (whitespace runs count as one space, `...`
stands for any text, a line of just `...` for any lines; a command may exit non-zero only
when the next one is `echo $?`, which shows its status); any other block is not run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from gov_pipeline.embedded.instance import ROOT

README = ROOT / "README.md"
RUN = ("bash", "console")
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = "@@readme"
MARK_LINE = re.compile(rf"^{MARK} (block|step|rc|end) ?([\d.]*)@@$")


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    section: str  # the `## ` heading it is under
    language: str
    text: str
    line: int  # of its first line of content

    def commands(self) -> list[str]:
        """The command lines of a bash block, continuation lines joined; no blank lines."""
        joined = self.text.replace("\\\n", " ")
        return [line for line in joined.splitlines() if line.strip()]


@dataclass(frozen=True)
class Step:
    """One `$ command` of a console block and the output shown under it."""

    command: str
    expected: list[str]


def readme_blocks() -> list[Block]:
    """Every fenced block of the README, in order."""
    lines = README.read_text().splitlines()
    blocks, section = [], ""
    language: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if language is None:
            if line.startswith("## "):
                section = line[3:].strip()
            elif fence:
                language, body, start = fence.group(1), [], number + 1
        elif line.startswith("```"):
            blocks.append(Block(section, language, "\n".join(body), start))
            language = None
        else:
            body.append(line)
    return blocks


def runnable(section: str) -> list[Block]:
    """The bash and console blocks of one `## ` section."""
    return [b for b in readme_blocks() if b.section == section and b.language in RUN]


def transcript(block: Block) -> list[Step]:
    """The steps of a console block."""
    steps: list[Step] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:], []))
        elif steps:
            steps[-1].expected.append(line)
        elif line.strip():
            raise ValueError(f"README.md:{block.line}: output before the first `$ ` command")
    return steps


def script(blocks: list[Block]) -> str:
    """One bash script running `blocks` in order, with markers between them (and between
    the steps of a console block) so the output can be told apart."""
    parts = ["set -e"]
    for b, block in enumerate(blocks):
        parts.append(f"printf '\\n{MARK} block {b}@@\\n'")
        if block.language == "bash":
            parts.append(block.text)
            continue
        parts += ["set +e", f"printf '\\n{MARK} step {b}.0@@\\n'"]
        steps = transcript(block)
        for s, step in enumerate(steps):
            parts.append(step.command)
            # The markers, then $? restored for a following `echo $?`.
            after = f"\\n{MARK} rc %s@@\\n" + (
                f"\\n{MARK} step {b}.{s + 1}@@\\n" if s + 1 < len(steps) else ""
            )
            parts.append(f"__rc=$?; printf '{after}' \"$__rc\"; (exit $__rc)")
        parts.append("set -e")
    parts.append(f"printf '\\n{MARK} end@@\\n'")
    return "\n".join(parts) + "\n"


@dataclass
class Session:
    """What a bash session over some blocks printed, block by block and step by step."""

    blocks: list[Block]
    returncode: int
    output: str
    by_block: dict[int, list[str]] = field(default_factory=dict)
    by_step: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    status: dict[tuple[int, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        block, step = -1, None
        for line in self.output.splitlines():
            mark = MARK_LINE.match(line)
            if mark is None:
                self.by_block.setdefault(block, []).append(line)
                if step is not None:
                    self.by_step.setdefault(step, []).append(line)
                continue
            kind, number = mark.groups()
            if kind == "block":
                block, step = int(number), None
            elif kind == "step":
                step = (block, int(number.split(".")[1]))
                self.by_step.setdefault(step, [])
            elif kind == "rc" and step is not None:
                self.status[step] = int(number)
                step = None
            else:
                block, step = len(self.blocks), None

    def text(self, block: int) -> str:
        return "\n".join(self.by_block.get(block, []))

    def where(self) -> str:
        """Where the session stopped, and the end of its output, for an assertion message."""
        last = max(self.by_block, default=-1)
        shown = self.blocks[last] if 0 <= last < len(self.blocks) else None
        at = f"README.md:{shown.line} ({shown.section})" if shown else "before the first block"
        return f"bash exited {self.returncode} in the block at {at}:\n{self.output[-4000:]}"

    def transcript_problems(self) -> list[str]:
        """Every console step whose output or exit status differs from what the README shows."""
        problems = []
        for b, block in enumerate(self.blocks):
            if block.language != "console":
                continue
            steps = transcript(block)
            for s, step in enumerate(steps):
                actual = self.by_step.get((b, s))
                where = f"README.md:{block.line} `$ {step.command}`"
                if actual is None:
                    problems.append(f"{where}: not run")
                    continue
                shows_status = s + 1 < len(steps) and steps[s + 1].command == "echo $?"
                status = self.status.get((b, s))
                if status != 0 and not shows_status:
                    problems.append(f"{where}: exited {status}")
                if not output_matches(step.expected, actual):
                    problems.append(f"{where}: printed\n" + "\n".join(_trimmed(actual)))
        return problems


def _normal(line: str) -> str:
    return " ".join(line.split())


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` looks like `expected` (whitespace runs count as one space; `...`
    is any text, a line of just `...` any lines; blank lines at either end are ignored)."""
    pattern = []
    for line in _trimmed(expected):
        normal = _normal(line)
        if normal == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*".join(re.escape(p) for p in normal.split("...")) + r"\n")
    text = "".join(_normal(line) + "\n" for line in _trimmed(actual))
    return re.fullmatch("".join(pattern), text) is not None


def _trimmed(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def new_user_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of someone who just cloned the repository: none of the project's
    variables, the virtualenv's bin first on PATH, unbuffered Python (so the lines of a
    command come in the order a terminal shows them), then `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GOV_PIPELINE_", "GOV_TEST_", "DAGSTER_", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_session(
    blocks: list[Block], env: Mapping[str, str], log: Path, timeout_s: float
) -> Session:
    """Run `blocks` in one bash session from the repository root, in a process group of its
    own, its output in `log`; whatever it left running is stopped when bash has exited."""
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", script(blocks)], cwd=ROOT, env=dict(env), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            process.wait(timeout=timeout_s)
        finally:
            stop_groups([process])
    return Session(blocks, process.returncode, log.read_text())


def stop_groups(processes: list[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    """SIGTERM the process groups of `processes` (each with what it left in the background),
    all at once; wait until they are empty or `grace_s` passed; SIGKILL what is left."""
    for process in processes:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = list(processes)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _group_lives(p)]
    for process in alive:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        if process.poll() is None:
            process.wait(timeout=10)


def _group_lives(process: subprocess.Popen[bytes]) -> bool:
    process.poll()  # reaps the leader: a zombie still counts as a member of its group
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def machine_paths(block: Block) -> Iterator[str]:
    """Absolute paths of somebody's machine in a block (`/srv/dagster`, `/home/me/...`)."""
    for match in re.finditer(
        r"(?<![\w.~$}])/(?:srv|etc|opt|var|home|Users|root|usr)/\S*", block.text
    ):
        yield match.group(0)
