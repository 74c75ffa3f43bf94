"""One intra-op thread for these tests (tests/threads.py says why)."""

from tests.threads import one_thread  # noqa: F401  (an autouse fixture)
