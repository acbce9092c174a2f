"""``--help`` as sfamp prints it: a flag has no value, so no type is shown beside it.

Typer (0.29) prints a type beside every option in its help panels, flags included:
``--dry-run <bool>``, ``--help -h <bool>``, as if each took a value. sfamp's
groups and commands blank the metavar of every flag (their own, ``--help`` and
the completion options) before the help is drawn; options that take a value keep
theirs (``--mapping <path>``). :class:`SfampTyper` declares every command group
and command with these classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType


def blank_flag_metavars(command: TyperCommand | TyperGroup, ctx: Any) -> None:
    """Give each flag of ``command`` (``--help`` included) an empty metavar."""
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class FlagCommand(TyperCommand):
    """A command whose help shows no type beside its flags."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        blank_flag_metavars(self, ctx)
        super().format_help(ctx, formatter)


class FlagGroup(TyperGroup):
    """A command group whose help shows no type beside its flags."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        blank_flag_metavars(self, ctx)
        super().format_help(ctx, formatter)


class SfampTyper(typer.Typer):
    """``typer.Typer`` whose group and commands are :class:`FlagGroup` and
    :class:`FlagCommand` unless a command asks for another class."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", FlagGroup)
        super().__init__(**kwargs)

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs["cls"] = kwargs.get("cls") or FlagCommand
        return super().command(*args, **kwargs)
