"""CLI plumbing shared by every command, and the one registry that wires the commands into
`prep` and `train`.

Commands are registered by import path and loaded on first use, so the packages never import
each other to register a command (no cycles) and `prep --help` does not import torch.
"""
from __future__ import annotations

import functools
import importlib
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .errors import BusyError, GlacierError

DEBUG_ENV = "GLACIER_DEBUG"  # set to 1 to see full tracebacks of unexpected errors
# GDAL's own error lines (e.g. "_tiffWriteProc: No space left on device" four times) reach
# Python's last-resort log handler before the one line we print for the same failure.
logging.getLogger("rasterio").addHandler(logging.NullHandler())

COMMANDS: dict[str, dict[str, str]] = {
    "prep": {"export": "gee_export.cli:export", "status": "gee_export.cli:status",
             "pull": "gee_export.cli:pull", "tile": "tiling.cli:tile"},
    "train": {"run": "training.cli:run", "predict": "training.cli:predict",
              "evaluate": "training.cli:evaluate", "change": "training.cli:change",
              "compare": "training.cli:compare", "models": "training.cli:models"},
}
CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


class LazyGroup(click.Group):
    """A group whose commands are imported from 'module:attribute' strings when used."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            refuse_options_as_values(ctx, cmd, rest)
        return name, cmd, rest

    def main(self, args: list[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Like click's, but a usage error (a bad option value) is one 'Error: ...' line
        naming the option, as every other failure is, not a usage block."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def refuse_options_as_values(ctx: click.Context, cmd: click.Command, args: list[str]) -> None:
    """Refuse an option given without its value: click would take the next option as the
    value (`--bands --size 256` would set --bands to '--size' and leave 256 stray).

    Raises:
        click.UsageError: naming the option that lacks its value.
    """
    options = [p for p in cmd.get_params(ctx) if isinstance(p, click.Option)]
    known = {o for p in options for o in p.opts + p.secondary_opts}
    takes = {o: p.nargs for p in options if not p.is_flag and not p.count for o in p.opts}
    i = 0
    while i < len(args) and args[i] != "--":
        n = takes.get(args[i], 0)
        for value in args[i + 1:i + 1 + n]:
            if value in known or value.startswith("--"):
                raise click.UsageError(f"{args[i]} needs a value; it was followed by the "
                                       f"option {value}")
        i += 1 + n


def _version() -> str:
    from .layout import package_version

    return package_version()


@click.group(cls=LazyGroup, lazy=COMMANDS["prep"], context_settings=CONTEXT)
@click.version_option(_version(), prog_name="prep", message="%(prog)s (glacier-mapping) "
                      "%(version)s")
def prep():
    """Prepare data: export the 11-band stack, cut labelled tiles, watch export tasks."""


@click.group(cls=LazyGroup, lazy=COMMANDS["train"], context_settings=CONTEXT)
@click.version_option(_version(), prog_name="train", message="%(prog)s (glacier-mapping) "
                      "%(version)s")
def train():
    """Train and apply glacier segmentation models; measure glacier change."""


# -- one line per failure ---------------------------------------------------------------------

def failure_line(exc: BaseException, where: Path | None = None) -> str:
    """What a user sees for an error: one line naming the culprit, never a traceback. A full
    disk is said so, naming the file where the error does, else `where` (the workspace)."""
    from .gdal_errors import no_space_left

    if isinstance(exc, GlacierError):
        return str(exc)
    if not (isinstance(exc, OSError) and exc.filename) and no_space_left(exc, where):
        return f"cannot write under {where or 'the output directory'}: no space left on device"
    if isinstance(exc, OSError):
        from .atomic import write_error

        if exc.filename and getattr(exc, "errno", None) in (28, 30, 13, 1, 122):
            return str(write_error(Path(exc.filename), exc))
        if exc.filename:
            return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"unexpected {type(exc).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback)"


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any failure into one 'Error: ...' line and exit status 1; Ctrl-C into 130.
    libtiff's own error lines are kept for that line instead of printed before it; a busy
    output's message suggests --wait only where the command offers it. A command that ends
    well rebuilds its workspace's STAC catalog (`catalog_after`)."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from .gdal_errors import clear_messages, keep_libtiff_errors

        keep_libtiff_errors()
        clear_messages()
        try:
            result = fn(*a, **kw)
            catalog_after(kw)
            return result
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted; finished work is kept, rerun the same command to resume",
                       err=True)
            sys.exit(130)
        except Exception as e:  # every failure reaches the user as one line
            if os.environ.get(DEBUG_ENV) and not isinstance(e, GlacierError):
                raise
            line = failure_line(e, _workspace_of(kw))
            if isinstance(e, BusyError) and "wait" in kw:
                line += ", or rerun with --wait"
            raise click.ClickException(line) from None
    return wrapper


def catalog_after(kw: dict) -> None:
    """Rebuild the STAC catalog of the workspace a command ran on, a rerun with nothing to do
    included, so that a product deleted by hand leaves no item (and no dangling href) behind
    and a product across UTM zones, listed after its zones, is in it. Nothing where there is
    no workspace yet, where it is read-only, and under torchrun but on rank 0."""
    from .layout import EXPORTS_DIR, PREDICTIONS_DIR, STAC_DIR, TILES_DIR
    from .stac import update_catalog

    ws = _catalogued_workspace(kw)
    if ws is None or os.environ.get("RANK", "0") != "0" or not any(
            (ws / d).is_dir() for d in (EXPORTS_DIR, TILES_DIR, PREDICTIONS_DIR)):
        return
    stac = ws / STAC_DIR
    if os.access(ws, os.W_OK) and (not stac.exists() or os.access(stac, os.W_OK)):
        update_catalog(ws, click.echo)


def _catalogued_workspace(kw: dict) -> Path | None:
    """The workspace a command wrote to: --workspace (or its default), else that of the
    predictions it was given (train evaluate; train change --predictions)."""
    from .layout import WORKSPACE_ENV, resolve_workspace, workspace_of

    given = [Path(p) for p in (kw.get("predictions") or ())] + (
        [Path(kw["prediction"])] if kw.get("prediction") else [])
    if given and ("workspace" not in kw or kw["workspace"] is None
                  and not os.environ.get(WORKSPACE_ENV)):
        return workspace_of(given[0], "prediction")
    if "workspace" not in kw:
        return None  # a command of no workspace (train models)
    try:
        return resolve_workspace(kw["workspace"])
    except GlacierError:
        return None


def _workspace_of(kw: dict) -> Path | None:
    """The workspace a command writes to, for a failure no file is named in."""
    if "workspace" not in kw:
        return None
    from .layout import resolve_workspace

    try:
        return resolve_workspace(kw["workspace"])
    except GlacierError:
        return None


# -- options and value types shared by several commands ----------------------------------------

quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
force_option = click.option("--force", is_flag=True,
                            help="Replace a product made with other parameters.")
wait_option = click.option("--wait", is_flag=True, help="If another process is writing the "
                           "same output, wait for it instead of stopping.")
workspace_option = click.option(
    "--workspace", type=click.Path(path_type=Path), default=None,
    help="Workspace directory holding exports/, tiles/, runs/, predictions/. "
         "[default: $GLACIER_WORKSPACE, else ./workspace]")


def option_group(*options: Callable[[Callable[..., Any]], Callable[..., Any]]
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Several click options as one decorator, in `--help` in the order given: a group of
    options that belong together keeps a command's decorators short."""
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


class Name(click.ParamType):
    """A product's --name: one plain path component of its own (layout.check_name), refused
    at parse time, before anything is read or removed. `zone_part` lets it name a zone's part
    of a zoned product (to choose an existing one, not to make one)."""
    name = "name"

    def __init__(self, zone_part: bool = False):
        self.zone_part = zone_part

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        from .errors import InputError
        from .layout import check_name

        try:
            check_name(str(value), "", self.zone_part)
        except InputError as e:
            self.fail(str(e), param, ctx)
        return str(value)


class AutoInt(click.ParamType):
    """'auto' or an integer of at least `minimum` (the command decides what auto means); with
    `processes`, a number of processes, at most what the machine runs (check_processes)."""
    name = "auto|integer"

    def __init__(self, minimum: int = 0, processes: bool = False):
        self.minimum, self.processes = minimum, processes

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int | str | None:
        n = self._convert(value, param, ctx)
        if self.processes and isinstance(n, int):
            from .errors import InputError
            from .workers import check_processes

            try:
                check_processes(n, "")
            except InputError as e:
                self.fail(str(e).strip(), param, ctx)
        return n

    def _convert(self, value: Any, param: click.Parameter | None,
                 ctx: click.Context | None) -> int | str | None:
        if value is None or value == "auto" or isinstance(value, int):
            if isinstance(value, int) and value < self.minimum:
                self.fail(f"{value} is below the minimum {self.minimum}", param, ctx)
            return value
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor an integer", param, ctx)
        if n < self.minimum:
            self.fail(f"{n} is below the minimum {self.minimum}", param, ctx)
        return n


class FiniteFloat(click.FloatRange):
    """A number, within optional bounds like click.FloatRange's, that is refused at parse
    time, naming the option, when it is nan or infinite: every float option uses it."""
    name = "float"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()


class Device(click.ParamType):
    """auto, cpu, cuda or cuda:N."""
    name = "auto|cpu|cuda|cuda:N"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        if re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)):
            return str(value)
        self.fail(f"{value!r}: use auto, cpu, cuda or cuda:N", param, ctx)


def multiple_of(n: int) -> Callable[[click.Context, click.Parameter, int | None], int | None]:
    """A click callback refusing values that are not multiples of n (None passes)."""
    def check(ctx, param, value):
        if value is not None and value % n:
            raise click.BadParameter(f"{value} is not a multiple of {n}")
        return value
    return check
