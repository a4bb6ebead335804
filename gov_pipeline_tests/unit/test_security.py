"""Security properties checked from the source: no dynamic code execution or unsafe
deserialisation anywhere in the package (an AST walk, not a grep), every local service bound
to 127.0.0.1, and secrets masked in the settings' repr."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from gov_pipeline.config import load_settings
from gov_pipeline.embedded.webhook_receiver import webhook_receiver

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gov_pipeline"

# -- no code execution, no unsafe deserialisation ----------------------------------------------

# Calls that run or import code chosen at run time, or rebuild objects from bytes.
BANNED_NAMES = {"eval", "exec", "compile", "__import__", "breakpoint"}
BANNED_ATTRIBUTES = {
    ("pickle", "loads"), ("pickle", "load"), ("pickle", "Unpickler"),
    ("marshal", "loads"), ("marshal", "load"), ("shelve", "open"),
    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "unsafe_load_all"),
    ("yaml", "full_load_all"), ("importlib", "__import__"), ("builtins", "eval"),
    ("builtins", "exec"), ("os", "system"), ("os", "popen"), ("dill", "loads"),
}  # fmt: skip
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def dangerous_calls(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: what` for each call that executes code or deserialises unsafely."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, last = name.rpartition(".")
        what = None
        if name in BANNED_NAMES or (head.rpartition(".")[2], last) in BANNED_ATTRIBUTES:
            what = f"{name}()"
        elif last in ("load", "load_all") and head.rpartition(".")[2] == "yaml":
            loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            if loader is None or _dotted(loader).rpartition(".")[2] not in SAFE_YAML_LOADERS:
                what = f"{name}() without a safe Loader"
        elif any(k.arg == "shell" and not _is_false(k.value) for k in node.keywords):
            what = f"{name}(shell=...)"
        if what:
            found.append(f"{filename}:{node.lineno}: {what}")
    return found


def _is_false(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


SAMPLE = """
import pickle, yaml, subprocess, builtins
from yaml import SafeLoader
x = eval("1 + 1")
exec(code)
compile("x", "f", "exec")
__import__("os")
pickle.loads(data)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.full_load(text)
subprocess.run(cmd, shell=True)
builtins.exec("x")
# below: all fine
yaml.load(text, Loader=SafeLoader)
yaml.load(text, yaml.CSafeLoader)
yaml.safe_load(text)
re.compile("x")
ast.literal_eval("1")
subprocess.run(["ls"], shell=False)
obj.evaluate(context)
"""


def test_the_detector_flags_each_dangerous_call_and_nothing_else() -> None:
    found = dangerous_calls(SAMPLE)
    assert [line.split(": ", 1)[1] for line in found] == [
        "eval()",
        "exec()",
        "compile()",
        "__import__()",
        "pickle.loads()",
        "yaml.load() without a safe Loader",
        "yaml.load() without a safe Loader",
        "yaml.full_load()",
        "subprocess.run(shell=...)",
        "builtins.exec()",
    ]


PY_FILES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_python_files_to_check() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in PY_FILES}
    assert {"domain/conditions.py", "domain/definitions.py", "engine/execution.py"} <= names
    assert len(PY_FILES) > 50


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_code_execution_or_unsafe_deserialisation_in_the_package(path: Path) -> None:
    assert dangerous_calls(path.read_text(encoding="utf-8"), str(path)) == []


# -- every local service listens on 127.0.0.1 --------------------------------------------------

LOOPBACK = {"127.0.0.1", "::1", "-::1", "localhost"}


def _commands(text: str) -> list[str]:
    """Shell commands of a script or Makefile, continuation lines joined."""
    return [c.strip() for c in text.replace("\\\n", " ").splitlines() if c.strip()]


def _make_recipe(target: str) -> list[str]:
    recipe, inside = [], False
    for line in _commands((ROOT / "Makefile").read_text()):
        if re.match(rf"^{target}:", line):
            inside = True
        elif inside and re.match(r"^[A-Za-z_.-]+:", line):
            break
        elif inside:
            recipe.append(line)
    return recipe


def _option(args: list[str], *names: str) -> list[str]:
    values = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


def test_make_dev_serves_the_ui_on_127_0_0_1_only() -> None:
    servers = [shlex.split(c) for c in _make_recipe("dev") if "dagster dev" in c]
    assert servers, "make dev starts no dagster dev?"
    for args in servers:
        assert _option(args, "-h", "--host") == ["127.0.0.1"], args


def test_every_server_a_script_starts_binds_to_loopback() -> None:
    checked = 0
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        text = script.read_text()
        assert "0.0.0.0" not in text and "listen_addresses" not in text, script
        for command in _commands(text):
            if command.startswith("redis-server"):
                args = shlex.split(command)
                binds = args[args.index("--bind") + 1 : args.index("--port")]
                assert binds and set(binds) <= LOOPBACK, command
                checked += 1
    assert checked >= 1


def _server_calls_with_defaults(tree: ast.AST) -> list[tuple[ast.Call, dict[str, ast.expr]]]:
    """Each server call, with the defaults of the parameters of the function it is in."""
    found: list[tuple[ast.Call, dict[str, ast.expr]]] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        args = function.args
        named = [*args.posonlyargs, *args.args]
        defaults = {
            a.arg: d
            for a, d in zip(named[len(named) - len(args.defaults) :], args.defaults, strict=True)
        }
        defaults |= {
            a.arg: d
            for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
            if d is not None
        }
        found += [(call, defaults) for call in _server_calls(function)]
    top = {id(call) for call, _ in found}
    return found + [(call, {}) for call in _server_calls(tree) if id(call) not in top]


def test_the_webhook_receivers_command_listens_on_127_0_0_1_unless_told() -> None:
    from gov_pipeline.embedded import webhook_receiver

    source = Path(webhook_receiver.__file__).read_text()
    assert '"--host", default="127.0.0.1"' in source


def _server_calls(tree: ast.AST) -> list[ast.Call]:
    servers = ("HTTPServer", "ThreadingHTTPServer", "TCPServer", "create_server")
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _dotted(node.func).rpartition(".")[2] in servers
    ]


def test_every_socket_server_in_the_code_binds_to_127_0_0_1() -> None:
    """By default: an address the caller gives (the webhook receiver's `host`, for a test
    host in a network namespace) defaults to 127.0.0.1."""
    found = 0
    for path in [*PY_FILES, *sorted((ROOT / "benchmarks").glob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call, defaults in _server_calls_with_defaults(tree):
            address = call.args[0]
            assert isinstance(address, ast.Tuple), f"{path}:{call.lineno}"
            host = address.elts[0]
            if isinstance(host, ast.Name):
                host = defaults.get(host.id, host)
            assert isinstance(host, ast.Constant) and host.value == "127.0.0.1", (
                f"{path}:{call.lineno}"
            )
            found += 1
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("0.0.0.0", "::"):
                pytest.fail(f"{path}:{node.lineno}: a wildcard address")
    assert found >= 1  # the webhook receiver


def test_the_webhook_receiver_listens_on_127_0_0_1() -> None:
    with webhook_receiver("secret") as (url, _):
        assert url.startswith("http://127.0.0.1:")


def test_dagster_processes_started_by_the_project_open_no_public_port() -> None:
    """The daemon and the worker serve nothing; the only UI the project starts (make dev,
    the e2e tests) is told -h 127.0.0.1."""
    from gov_pipeline.embedded import instance, processes

    source = Path(instance.__file__).read_text() + Path(processes.__file__).read_text()
    assert "dagster-webserver" not in source and "dagster dev" not in source
    starts = "bin_path(" + '"dagster-webserver")'  # split: this file must not match itself
    started = 0
    for path in sorted((ROOT / "gov_pipeline_tests").rglob("*.py")):
        for line in path.read_text().splitlines():
            if starts in line:
                # The hosts tests' webserver listens on db's address on their private
                # switch, which nothing outside the test's namespaces reaches.
                loopback = '"-h", "127.0.0.1"' in line
                assert loopback or (path.parent.name == "hosts" and '"-h", db' in line), (
                    f"{path}: {line.strip()}"
                )
                started += 1
    assert started >= 1


# -- secrets are not shown -----------------------------------------------------------------------


def test_settings_repr_masks_every_secret() -> None:
    settings = load_settings(
        {
            "GOV_PIPELINE_WEBHOOK_SECRET": "hook-s3cr3t",
            "GOV_PIPELINE_DATABASE_URL": "postgresql://gov:db-s3cr3t@127.0.0.1:5432/gov",
            "GOV_PIPELINE_REDIS_URL": "redis://:redis-s3cr3t@127.0.0.1:6379/0",
        }
    )
    shown = repr(settings) + str(settings)
    for secret in ("hook-s3cr3t", "db-s3cr3t", "redis-s3cr3t"):
        assert secret not in shown
    assert "postgresql+psycopg2://gov:***@127.0.0.1:5432/gov" in shown
    assert "redis://:***@127.0.0.1:6379/0" in shown
    assert settings.database_url.endswith("gov:db-s3cr3t@127.0.0.1:5432/gov")  # still usable
