"""Errors in one line for every ``kdlab`` command.

:class:`ErrorsInOneLine` is the CLI group's class: usage errors, the project's own errors
(a bad spec, profile, results folder, missing device...) and anything unexpected each print
one line, ``kdlab: error: ...``, and exit non-zero (2 for usage, 1 otherwise). With
``kdlab --debug`` an unexpected error shows its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

#: Errors whose message already says what was wrong and what to do: printed as they are.
_OWN_ERRORS = ("SpecError", "ProfileError", "ResultsError", "EngineUnavailable", "OmbError", "TestbedError",
               "SweepTooLarge", "HostsError", "ClusterError")  # fmt: skip


def one_line(text: str) -> str:
    """Several lines of a message joined into one."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _is_own(err: BaseException) -> bool:
    return any(cls.__name__ in _OWN_ERRORS for cls in type(err).__mro__)


class ErrorsInOneLine(click.Group):
    """A click group whose errors are one line each; ``--debug`` (a group option) shows tracebacks."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv[: argv.index("--") if "--" in argv else len(argv)]
        try:
            result = super().main(argv, prog_name or "kdlab", complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.Abort:  # click turns Ctrl-C (KeyboardInterrupt) into Abort
            click.echo("kdlab: interrupted (the points that finished were written)", err=True)
            sys.exit(1)
        except click.UsageError as err:
            where = f"kdlab {err.ctx.command_path.partition(' ')[2]}".strip() if err.ctx else "kdlab"
            click.echo(f"{where}: error: {one_line(err.format_message())} (see {where} --help)", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(f"kdlab: error: {one_line(err.format_message())}", err=True)
            sys.exit(err.exit_code)
        except Exception as err:
            if debug:
                raise
            if _is_own(err):
                click.echo(f"kdlab: error: {one_line(str(err))}", err=True)
            else:
                click.echo(f"kdlab: error: {type(err).__name__}: {one_line(str(err))} (kdlab --debug ... shows the "
                           "traceback)", err=True)  # fmt: skip
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)
