"""The exceptions dposhap raises: one tree under :class:`DposhapError`.

Input errors say what was wrong, where (file, line, field where there is one) and what to do.
The Rust core's errors arrive as these classes too.
"""

from __future__ import annotations

from typing import Any


class DposhapError(Exception):
    """Root of every error dposhap raises on purpose.

    Attributes
    ----------
    partial
        Whatever had been computed when the error struck (for example the
        :class:`~dposhap.ShapleyResult` of the coalitions evaluated so far), or None.
    """

    partial: Any = None


class InvalidArgumentError(DposhapError, ValueError):
    """An argument is outside its domain: an unknown method, ``n_players < 1``, ``tol <= 0``..."""


class SettingError(InvalidArgumentError):
    """A setting of a settings table (``min_pairs`` of the data settings...) is outside its domain.

    Attributes
    ----------
    setting
        The setting's name in its table, so that a config file's error can name its line.
    """

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting

    @property
    def reason(self) -> str:
        """The message without the setting's name in front, where it starts with it."""
        text = str(self)
        for lead in (f"{self.setting} ", f"{self.setting}: "):
            if text.startswith(lead):
                return text[len(lead) :]
        return text


class BudgetTooSmallError(InvalidArgumentError):
    """The evaluation budget cannot pay for the smallest useful run of the chosen method."""


class UtilityError(DposhapError, ValueError):
    """A utility returned something unusable: the wrong shape, NaN or infinity."""


class ProtocolError(DposhapError, RuntimeError):
    """The ask/tell protocol was broken, e.g. telling a coalition that was never asked."""


class DataError(DposhapError, ValueError):
    """Bad input data, located by file, line and field.

    Parameters
    ----------
    message
        What is wrong and what to do about it.
    file, line, field
        Where the problem is, as far as it is known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        if field is not None:
            where = f"{where} field {field!r}" if where else f"field {field!r}"
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(DataError):
    """A run configuration (TOML file or command-line override) is wrong, located like :class:`DataError`."""


class ModelLoadError(DposhapError, RuntimeError):
    """A base model, tokenizer, adapter or reward model could not be loaded; says from where and what to try."""


class RunError(DposhapError, RuntimeError):
    """A run directory is not usable as asked: not a run, incomplete, or damaged; says how to repair it."""


class NotARunError(RunError):
    """The folder holds no trained run (no readable ``manifest.json`` with trained sources)."""


class IncompleteRunError(RunError):
    """A run lacks some of its planned sources (an interrupted ``train``, or a subset trained); says how to finish."""


class SubsetWarning(UserWarning):
    """Less of the user's data is used than they gave (e.g. the first ``n_prompts`` of a prompt file)."""


class IncompleteRunWarning(UserWarning):
    """Valuing a partial run: the values are those of the trained sources only."""


class BackendFallbackWarning(UserWarning):
    """``backend="auto"`` runs on a slower compose backend because a faster one is unavailable here;
    says why and how to get it (once per backend and process)."""


class RunLockedError(RunError):
    """Another process is working on the same run directory."""


class CacheError(DposhapError, RuntimeError):
    """A cache file (the SQLite utility store, a margins file) is unusable: foreign, damaged or locked."""


class PromptDataError(DataError):
    """A prompt file for the generation utility is missing, empty or malformed; located like :class:`DataError`."""


class NativeBuildError(DposhapError, RuntimeError):
    """The native compose extension could not be built (no compiler, no ninja, a build error)."""


class DataValidationError(DataError):
    """Input data failed validation; every problem found is listed, not only the first.

    Parameters
    ----------
    problems
        The problems found, each with ``file``, ``line``, ``field`` and ``message`` attributes and a
        ``str()`` that says where and what (:class:`dposhap.data.DataProblem`). At least one.

    Attributes
    ----------
    problems
        The list of problems, in the order they were found.
    file, line, field
        Where the first problem is.
    """

    max_listed = 20

    def __init__(self, problems: Any):
        self.problems = list(problems)
        if not self.problems:
            raise ValueError("DataValidationError needs at least one problem")
        count = len(self.problems)
        head = "1 problem" if count == 1 else f"{count} problems"
        lines = [f"{head} in the preference data; fix them and run again:"]
        lines += [f"  - {problem}" for problem in self.problems[: self.max_listed]]
        if count > self.max_listed:
            lines.append(f"  ... and {count - self.max_listed} more")
        first = self.problems[0]
        super().__init__("\n".join(lines))
        self.file, self.line, self.field = first.file, first.line, first.field


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


__all__ = [
    "DposhapError",
    "InvalidArgumentError",
    "SettingError",
    "BudgetTooSmallError",
    "UtilityError",
    "ProtocolError",
    "DataError",
    "DataValidationError",
    "ConfigError",
    "ModelLoadError",
    "RunError",
    "NotARunError",
    "IncompleteRunError",
    "IncompleteRunWarning",
    "BackendFallbackWarning",
    "RunLockedError",
    "CacheError",
    "PromptDataError",
    "NativeBuildError",
    "first_line",
]
