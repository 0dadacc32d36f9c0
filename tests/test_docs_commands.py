"""Every ``kdlab`` command line in the README and docs names a real subcommand with real options.

Each line is parsed by the CLI itself (click's ``make_context``: subcommand, options, choices,
types, required arguments and existing paths) without running it.
"""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import click
import pytest

from kdlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Where a shell command line ends for kdlab.
_SHELL_END = {"&&", "||", "|", ";", ">", ">>", "2>&1"}


def _command_lines(path: Path) -> list[tuple[str, str]]:
    """(where, the kdlab command line) for each in code blocks and inline code of a Markdown file."""
    text = path.read_text()
    found: list[tuple[str, str]] = []
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            code = line.split(" #", 1)[0].strip()
            if re.search(r"(^|[/\s])kdlab\s", code):
                found.append((f"{path.name}: {line.strip()[:60]}", code))
    for code in re.findall(r"`([^`\n]*\bkdlab [a-z][^`\n]*)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        found.append((f"{path.name}: `{code[:60]}`", code))
    return found


def _kdlab_args(code: str) -> list[str]:
    tokens = shlex.split(code)
    start = next(i for i, t in enumerate(tokens) if t == "kdlab" or t.endswith("/kdlab"))
    args: list[str] = []
    for token in tokens[start + 1 :]:
        if token in _SHELL_END:
            break
        args.extend(sorted(glob.glob(token, root_dir=ROOT)) or [token] if "*" in token else [token])
    return args


CASES = [case for doc in DOCS for case in _command_lines(doc)]


def test_the_docs_show_kdlab_commands() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize(("where", "code"), CASES, ids=[w for w, _ in CASES])
def test_a_documented_kdlab_command_line_parses(where: str, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    args = _kdlab_args(code)
    if len(args) == 1 and where.endswith("`"):  # prose naming a command (`kdlab testbed`): it must exist
        assert main.get_command(click.Context(main), args[0]) is not None, f"{where}: no subcommand {args[0]!r}"
        return
    try:
        _parse(where, args)
    except click.exceptions.Exit as done:  # --help, --version
        assert done.exit_code == 0


def _parse(where: str, args: list[str]) -> None:
    ctx = main.make_context("kdlab", list(args))
    rest = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") else [*ctx.protected_args, *ctx.args]
    while rest:
        name, command, rest = (
            main.resolve_command(ctx, rest) if ctx.command is main else ctx.command.resolve_command(ctx, rest)
        )
        assert command is not None, f"{where}: no subcommand {name!r}"
        if command.name == "testbed":
            assert rest and rest[0] in {"setup", "run", "has-rdma", "pyverbs-path", "--help"}, where
            return
        try:
            ctx = command.make_context(name, list(rest), parent=ctx)
        except click.UsageError as err:
            pytest.fail(f"{where}: {err.format_message()}")
        if not isinstance(command, click.Group):
            return
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
