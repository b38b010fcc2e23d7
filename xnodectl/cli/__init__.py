"""The CLI layer: typer only. Commands parse words into frozen options and call a service.

Only typer is imported at start-up; every command imports its service inside the function, so
`xnodectl --help` never loads pydantic, jinja2, siwe or web3.
"""

import logging
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer
from typer._click import exceptions as click_exc  # typer >= 0.29 vendors click as typer._click
from typer.core import TyperGroup

from xnodectl import __version__
from xnodectl.errors import ExitCode, XnodeError


class _State:
    debug = False


state = _State()


class _OneLineUsageError(click_exc.ClickException):
    exit_code = int(ExitCode.BAD_INPUT)

    def __init__(self, message: str, hint: str | None) -> None:
        super().__init__(message)
        self.hint = hint

    def show(self, file: Any = None) -> None:  # noqa: ARG002 - click's signature; always stderr
        text = f"error: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        typer.echo(text, err=True)


class _XnodeFailure(click_exc.ClickException):
    """Carries an XnodeError through click's own exit handling (works under CliRunner too)."""

    def __init__(self, error: XnodeError) -> None:
        super().__init__(error.message)
        self.error = error
        self.exit_code = int(error.exit_code)

    def show(self, file: Any = None) -> None:  # noqa: ARG002 - click's signature; always stderr
        typer.echo(self.error.one_line(), err=True)


def _hint_for(ctx: Any) -> str:
    path = ctx.command_path if ctx is not None else "xnodectl"
    return f"see '{path} --help'"


class XnodeGroup(TyperGroup):
    """The one catch point: user mistakes become one `error:` line and a documented exit code."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        from xnodectl.cli import helptext

        return helptext.tidy(super().get_command(ctx, cmd_name))

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click_exc.NoArgsIsHelpError:
            raise
        except click_exc.UsageError as exc:
            raise _OneLineUsageError(exc.format_message(), _hint_for(exc.ctx)) from exc

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (
            typer.Exit,
            typer.Abort,
            click_exc.NoArgsIsHelpError,
            _OneLineUsageError,
            _XnodeFailure,
        ):
            raise
        except click_exc.UsageError as exc:
            raise _OneLineUsageError(exc.format_message(), _hint_for(exc.ctx)) from exc
        except XnodeError as exc:
            if state.debug:
                logging.getLogger("xnodectl").exception("debug traceback")
            raise _XnodeFailure(exc) from exc
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:  # the reader of stdout went away (`| head`): as a SIGPIPE would
            raise typer.Exit(128 + 13) from None
        except Exception as exc:
            if state.debug:
                raise
            typer.echo(
                f"error: internal error: {type(exc).__name__}: {exc} "
                "(hint: rerun with --debug for the traceback and report it)",
                err=True,
            )
            raise typer.Exit(int(ExitCode.INTERNAL)) from exc


def new_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        cls=XnodeGroup,
        help=help_text,
        rich_markup_mode=None,
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
        pretty_exceptions_enable=False,
        add_completion=False,
    )


app = new_app("xnodectl: declarative NixOS provisioning for Xnodes.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xnodectl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show debug logs and tracebacks.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False,
) -> None:
    del version  # handled eagerly by its callback
    state.debug = debug
    level = logging.DEBUG if (debug or verbose) else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s: %(name)s: %(message)s"
    )


def _register() -> None:
    from xnodectl.cli import deploy, image, nodes, storekey, studio, templates, wallet

    templates.register(app)
    deploy.register(app)
    nodes.register(app)
    image.register(app)
    wallet.register(app)
    storekey.register(app)
    studio.register(app)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    app(args=list(argv) if argv is not None else None, prog_name="xnodectl")


def run() -> NoReturn:
    """The `xnodectl` program: `main`, then, once every output stream is flushed, exit without the
    interpreter's teardown of typer, pydantic, jinja2 and asyncio (about 45 ms of every command,
    measured on the project's test machine). Safe because the commands leave nothing to finalize:
    files are written in `with` blocks, child processes and threads are awaited, and the deploy
    engine closes its SSH masters and temporary directory itself."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("text") prints the text and exits 1, as Python would
            print(exc.code, file=sys.stderr)
            code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the reader went away (`xnodectl ... | head`): nothing to add
        pass
    logging.shutdown()
    os._exit(code)
