"""Moved: the shared test games and references live in :mod:`dposhap.testing`; import them from there.

This re-export remains only for tests outside the Shapley suite that still write
``from games import ...`` (tests/test_store.py); delete it once they import dposhap.testing.
"""

from dposhap.testing import *  # noqa: F403
