"""What the commands share: the parser, the exit statuses, the argument types and the flag builders.

The utilities' settings become flags here (``--max-new-tokens``...), one flag per field, through a
small layer of dposhap's own rather than transformers' ``HfArgumentParser`` (see :func:`settings_fields`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from ..errors import DposhapError
from ..evaluate import get_utility, utility_names

EXIT_USAGE = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130

QUIET = "no progress bars, nor the libraries' model loading reports"
THREADS = "torch CPU threads (default: chosen from the model's size; docs/composing.md)"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"dposhap: error: {message} (see {self.prog} --help)\n")


#: The subcommands of a parser, each made by :class:`Parser`.
Commands = argparse._SubParsersAction


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def seed(text: str) -> int:
    """An argparse type: a seed in [0, 2**64)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64), got {value}")
    return value


def ray_address(text: str) -> str:
    """An argparse type: a Ray address, checked (``--ray``)."""
    from ..cluster import check_address

    try:
        return check_address(text)
    except DposhapError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def settings_fields() -> dict[str, tuple[str, Any, str, str | None]]:
    """Every field of every registered utility's settings: ``{name: (flag, type hint, help [utilities], metavar)}``.

    The flags come from the settings dataclasses, as transformers' ``HfArgumentParser`` (and TRL's
    ``TrlParser``) would make them, but through this small layer rather than that one: several
    utilities' settings share a field (``--max-new-tokens`` is the generation's, the judge's and the
    likelihood's), which must become one flag naming every utility that reads it, where
    ``HfArgumentParser`` adds each dataclass's fields again and argparse refuses the second
    ``--max-new-tokens``; a field's default may differ between utilities, so a flag not given must stay
    None (the chosen utility's own default applies) where ``HfArgumentParser`` sets its default; its
    errors go through ``parser.error`` (usage and exit 2) where dposhap's are one line naming the
    flag; and it would import transformers for every command, ``--help`` included.
    """
    found: dict[str, tuple[str, Any, str, list[str], str | None]] = {}
    defaults: dict[str, set[str]] = {}
    for name in utility_names():
        settings_type = get_utility(name).settings_type
        hints = typing.get_type_hints(settings_type)
        for f in dataclasses.fields(settings_type):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            entry: tuple[str, Any, str, list[str], str | None] = (
                flag,
                hints[f.name],
                f.metadata.get("help", ""),
                [],
                f.metadata.get("metavar"),
            )
            found.setdefault(f.name, entry)[3].append(name)
            default = f.default if isinstance(f.default, (bool, int, float, str)) else None
            defaults.setdefault(f.name, set()).add("" if default is None or default is False else repr(default))

    def shown(name: str, text: str) -> str:  # a default every utility shares, unless the help says it
        (default,) = defaults[name] if len(defaults[name]) == 1 else ("",)
        return f"{text} (default {default})" if default and "default" not in text else text

    return {
        name: (flag, hint, f"{shown(name, text)} [{', '.join(users)}]", metavar)
        for name, (flag, hint, text, users, metavar) in found.items()
    }


def add_utility_flag(parser: argparse.ArgumentParser) -> None:
    """``--utility``: one of the registered utilities, each with its one-line help."""
    parser.add_argument(
        "--utility",
        required=True,
        choices=utility_names(),
        help="; ".join(f"{n}: {get_utility(n).help}" for n in utility_names()),
    )


def add_settings_flags(parser: argparse._ActionsContainer) -> None:
    """One flag per settings field of the registered utilities (``--max-new-tokens``...), help text included."""
    for name, (flag, hint, text, metavar) in settings_fields().items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
        if base is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=text)
        elif typing.get_origin(base) is list:
            parser.add_argument(
                flag,
                dest=name,
                action="append",
                metavar=metavar or "NAME",
                help=text + " (repeatable; or comma-separated)",
            )
        else:
            parser.add_argument(flag, dest=name, type=base, help=text)


def utility_settings(args: argparse.Namespace) -> Any:
    """The chosen utility's settings from the flags given (the others keep their defaults)."""
    settings_type = get_utility(args.utility).settings_type
    given = {}
    for f in dataclasses.fields(settings_type):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if isinstance(value, list):
            value = [part.strip() for item in value for part in item.split(",") if part.strip()]
        given[f.name] = value
    return settings_type(**given)


def add_check_flags(parser: argparse.ArgumentParser) -> None:
    """``--strict`` and ``--json`` of ``check`` and ``train --dry-run``."""
    parser.add_argument("--strict", action="store_true", help="with a check: the data audit's warnings are errors")
    parser.add_argument("--json", action="store_true", help="with a check: print it as JSON")


def add_cluster_flags(parser: argparse.ArgumentParser, workers: str) -> None:
    """``--ray`` and ``--workers``: where train/value run (docs/cluster.md)."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        type=ray_address,
        metavar="ADDRESS",
        help="run on Ray (pip install 'dposhap[ray]'): local (a runtime on this machine), auto or no value "
        "(RAY_ADDRESS, or this machine's cluster), host:port or ray://host:port, off (in this process); default: "
        "the [cluster] address of the config (train) or of the run (value), unset = in this process",
    )
    parser.add_argument("--workers", type=positive_int, help=f"with --ray: {workers} (default: fill the cluster)")
