"""What a valid text of a preference row is: plain strings and conversations, source names.

The checks here say why a value is not valid (worded to follow its location); the readers and
the row validation of :mod:`dposhap.data` put the file, line and field in front.
"""

from __future__ import annotations

import re
from typing import Any

Text = str | list[dict[str, str]]
"""A plain string, or a conversation: a list of ``{"role": ..., "content": ...}`` messages."""

TEXT_FIELDS = ("prompt", "chosen", "rejected")
PROMPT_ROLES = ("system", "developer", "user", "assistant", "tool")
RESPONSE_ROLES = ("assistant",)

_SURROGATE = re.compile("[\ud800-\udfff]")
#: ShareGPT's role names and the chat-template roles they stand for, for messages.
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
_SHAREGPT_HINT = (
    'ShareGPT style: rename "from" to "role" and "value" to "content", and the roles human to user and gpt to assistant'
)


def source_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a source, or None. Adapters are saved in folders named after sources."""
    if not isinstance(name, str):
        return f"is {a_json_kind(name)}, not a source name: write the name as a string"
    if not name.strip():
        return "is empty: give every row the name of its source"
    if name != name.strip():
        return f"has spaces at its start or end: write {name.strip()!r}"
    if (problem := _unicode_problem(name)) is not None:
        return problem
    if name.startswith("."):
        return (
            f"{name!r} starts with '.': such folder names are hidden and reserved for dposhap's temporary "
            "folders (adapters/.tmp-*); rename the source"
        )
    if name in (".", "..") or any(char in "/\\" or ord(char) < 32 or ord(char) == 127 for char in name):
        return (
            f"{name!r} cannot name a folder (each source's adapter is saved in adapters/<source>/): "
            "avoid '/', '\\', control characters, '.' and '..'"
        )
    return None


def _unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (bytes that were not UTF-8 were decoded as surrogates), or None."""
    match = _SURROGATE.search(text)
    if match is None:
        return None
    code = ord(match.group())
    what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
    return (
        f"is not valid UTF-8 text ({what} at character {match.start() + 1}): "
        "save the file as UTF-8 (it may be in Latin-1 or Windows-1252)"
    )


def text_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid text of a preference row, or None.

    A text is a non-empty string or a non-empty list of ``{"role", "content"}`` messages with
    known roles and non-empty contents, all valid UTF-8.

    Parameters
    ----------
    value
        The value read from the data (a prompt, chosen or rejected).

    Returns
    -------
    str or None
        The problem, worded to follow the field's location (``"is a number: ..."``).
    """
    if value is None:
        return "is empty (null): give every pair a prompt, a chosen and a rejected text"
    if isinstance(value, str):
        if not value.strip():
            return "is empty or only whitespace: write the text or drop the row"
        return _unicode_problem(value)
    if isinstance(value, list):
        return _conversation_problem(value)
    hint = ""
    if isinstance(value, dict):
        sharegpt = f"; {_SHAREGPT_HINT}" if {"from", "value"} & set(value) else ""
        hint = f" (a single message must still be inside a list{sharegpt})"
    return f'is {a_json_kind(value)}: a text is a string or a list of {{"role", "content"}} messages{hint}'


def _conversation_problem(messages: list[Any]) -> str | None:
    if not messages:
        return "is an empty list of messages: give at least one message"
    for number, message in enumerate(messages, start=1):
        where = f"message {number}"
        if not isinstance(message, dict):
            return f'{where} is {a_json_kind(message)}: each message is an object {{"role": ..., "content": ...}}'
        extra = sorted(
            str(key) for key, value in message.items() if key not in ("role", "content") and value is not None
        )
        if extra:
            hint = f" ({_SHAREGPT_HINT})" if {"from", "value"} & set(extra) else ""
            return f"{where} has keys besides role and content ({', '.join(extra)}): keep only role and content{hint}"
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            missing = "role" if not isinstance(role, str) else "content"
            hint = ""
            if missing == "content" and isinstance(content, list) and any(isinstance(p, dict) for p in content):
                hint = ' (its content is a list of parts like {"type": "text", "text": ...}: write their text as one string)'
            return f"{where} has no string {missing!r}: each message needs a string role and a string content{hint}"
        if role not in PROMPT_ROLES:
            renamed = _SHAREGPT_ROLES.get(role.lower())
            hint = f" (write {role!r} as {renamed!r}, as chat templates name it)" if renamed is not None else ""
            return f"{where} has role {role!r}: use one of {', '.join(PROMPT_ROLES)}{hint}"
        if not content.strip():
            return f"{where} is empty or only whitespace: write its content or remove the message"
        if (problem := _unicode_problem(content)) is not None:
            return f"{where} {problem}"
    return None


def json_kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    names = {bool: "boolean", int: "number", float: "number", dict: "object", list: "list", str: "string"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def a_json_kind(value: Any) -> str:
    """The JSON name of a value's type with its article ("a number", "an object"), for messages."""
    kind = json_kind(value)
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def normalise_text(value: Text) -> Text:
    """A valid text with messages reduced to exactly ``role`` and ``content`` (drops keys set to null)."""
    if isinstance(value, str):
        return value
    return [{"role": message["role"], "content": message["content"]} for message in value]


def copy_text(value: Text) -> Text:
    """A copy of a text that shares no message dict with it."""
    return value if isinstance(value, str) else [dict(message) for message in value]


def stripped_text(value: Text) -> Any:
    """A text with the space around each string removed, to compare chosen with rejected."""
    if isinstance(value, str):
        return value.strip()
    return [(message["role"], message["content"].strip()) for message in value]


def format_name(value: Text) -> str:
    """The text's format in words, for messages."""
    return "a conversation" if isinstance(value, list) else "a plain string"
