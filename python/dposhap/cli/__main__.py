"""``python -m dposhap.cli``: the ``dposhap`` program."""

from . import entry

if __name__ == "__main__":
    entry()
