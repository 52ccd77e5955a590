"""The ``dposhap`` command line.

Nothing reaches the user as a traceback. Errors that dposhap raises on purpose (bad data, a wrong
config, a model that cannot be loaded, a run directory in use) and the anticipated errors of the
libraries underneath (a full disk, a file that is not UTF-8, a tokenizer without a chat template)
are printed as one line that says what to do, with exit status 2 ("your input or your machine").
Anything else is a bug in dposhap: one line names the error and the file holding the full
traceback (``RUN/logs/`` when the run directory is known), with exit status 1. Ctrl-C exits 130.

This module wires the commands together and turns errors into that one line; each command's flags
and handler live in a module of its own (``train``, ``value``, ``select``, ``recipes``, ``reward``,
``doctor``), the flags they share in ``flags``. The libraries that are slow to import (torch,
transformers) are imported inside the handlers, so that ``dposhap --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import errno
import os
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DposhapError, IncompleteRunWarning
from . import doctor, recipes, reward, select, train, value
from .flags import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USAGE, Parser

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="dposhap", description="What each source of preference data is worth to a DPO fine-tune.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"dposhap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train.add_train(sub)
    train.add_check(sub)
    value.add_value(sub)
    select.add_select(sub)
    value.add_report(sub)
    recipes.add_demo(sub)
    recipes.add_reproduce(sub)
    reward.add_reward(sub)
    doctor.add_doctor(sub)
    return parser


def _one_line(err: DposhapError, args: argparse.Namespace) -> str:
    """The error as one line; a list of data problems goes to a file in the run directory."""
    problems = getattr(err, "problems", None)
    if not problems or len(problems) == 1:
        return str(err).split("\n")[0] if not problems else str(problems[0])
    out = getattr(args, "out", None)
    report = None
    if out is not None:
        with contextlib.suppress(OSError):
            Path(out).mkdir(parents=True, exist_ok=True)
            report = Path(out) / "data-problems.txt"
            report.write_text("\n".join(str(p) for p in problems) + "\n", encoding="utf-8")
    where = f"; all {len(problems)} listed in {report}" if report else f" (and {len(problems) - 1} more)"
    untouched = (
        "nothing was trained" if getattr(args, "command", "train") in ("train", "reward") else "nothing was evaluated"
    )
    return f"{len(problems)} problems in the data, {untouched}. First: {problems[0]}{where}"


def _disk_full(err: BaseException) -> bool:
    """Whether an error (or one it wraps) is a full disk or a file-size limit."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return True
        text = str(seen)
        if "No space left on device" in text or "File too large" in text or "disk is full" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _run_dir(args: argparse.Namespace) -> Path | None:
    """The run directory of the command, when it names one that exists."""
    for name in ("run", "out"):
        value = getattr(args, name, None)
        if value is not None and Path(value).is_dir():
            return Path(value)
    return None


def translate(err: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message of an anticipated error (of dposhap or of a library underneath), or None.

    None means the error is unanticipated: a bug, reported by :func:`main` with its traceback in a file.
    """
    if isinstance(err, DposhapError):
        return _one_line(err, args)
    where = _run_dir(args)
    if _disk_full(err):
        return (
            f"the disk is full (or a file-size limit was reached): {_first_line(err)}; free some space"
            + (f" on the disk of {where}" if where else "")
            + " and run the same command again (finished work was kept, nothing half-written was)"
        )
    if isinstance(err, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8 FILE) and run again"
        )
    if isinstance(err, (ValueError, KeyError)) and "chat_template" in str(err).replace(
        "chat template", "chat_template"
    ):
        return (
            "the model's tokenizer has no chat template, but the data or prompts are conversations (lists of "
            "messages): give plain-text prompts and responses, or use an instruct model that has a chat template"
        )
    if isinstance(err, MemoryError):
        return "out of memory: lower the batch size (--batch-size) or the sizes of the run, or use a bigger machine"
    if isinstance(err, OSError):  # a folder that cannot be written, a path that is missing...
        return f"{_first_line(err)}: check the path and its permissions, then run again"
    return None


def _first_line(err: BaseException) -> str:
    from ..errors import first_line

    return first_line(err)


def _log_traceback(err: BaseException, args: argparse.Namespace) -> Path | None:
    """Write the full traceback to RUN/logs/ (or a temporary folder); where it went, or None."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"dposhap-error-{stamp}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(err))
    where = _run_dir(args)
    folders = ([where / "logs"] if where is not None else []) + [Path(tempfile.gettempdir()) / "dposhap-logs"]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(f"dposhap {' '.join(sys.argv[1:])}\n{text}", encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 a bug, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # the libraries' deprecation notices are for their callers' code, not for users of this CLI
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.showwarning = _one_line_warning
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("dposhap: interrupted; finished work is saved, run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        message = translate(err, args)
        if message is not None:
            print(f"dposhap: error: {message}", file=sys.stderr)
            return EXIT_USAGE
        log = _log_traceback(err, args)
        where = f"the full traceback is in {log}" if log is not None else "no log could be written"
        print(
            f"dposhap: internal error (a bug in dposhap, please report it): {type(err).__name__}: "
            f"{_first_line(err)}; {where}",
            file=sys.stderr,
        )
        return EXIT_BUG


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """dposhap's own warnings as one line on stderr; the libraries' go unprinted."""
    if issubclass(category, IncompleteRunWarning) or str(getattr(category, "__module__", "")).startswith("dposhap"):
        print(f"dposhap: warning: {str(message).splitlines()[0]}", file=sys.stderr)


def entry() -> None:
    """The ``dposhap`` program: :func:`main`, its status the process's exit status."""
    status = main()
    if status == EXIT_INTERRUPTED:
        # a Ctrl-C that reaches Python while a library runs code through the C API's PyRun_*
        # marks the interpreter as interrupted even though main() handled it, and the process
        # would then end by SIGINT instead of with this status: leave without finalizing
        # (everything was saved and closed as the stack unwound)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    # the work is done and saved: a Ctrl-C while the interpreter shuts down has nothing left to stop,
    # and would otherwise turn this status into death by SIGINT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)
