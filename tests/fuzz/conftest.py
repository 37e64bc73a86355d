"""Property-based tests (hypothesis) over every validator and parser in core/ (issue 8 §5).

Two hypothesis profiles are registered here:

* ``fuzz`` (what every test in this folder runs with unless told otherwise): derandomized,
  so CI sees the same cases on every run; no example database (nothing is written to the
  tree); no deadline, since some properties do HTTP to 127.0.0.1. Each test sets its own
  number of cases through ``budget(n)`` (tests/fuzz/strategies.py): the whole folder runs
  about 17,400 generated cases plus the ``@example`` regressions in about a minute on two
  cores.

* ``long``: the same properties for a long, randomized campaign — every test's case count
  multiplied by ``LONG_FACTOR`` (default 50, env ``PLUGBOARD_FUZZ_FACTOR``), a fresh random
  seed each run, failures printed with a ``@reproduce_failure`` blob. Run it from the root
  of the repository, naming this folder (the profile is registered by this conftest, which
  pytest must load before it reads the option):

      python -m pytest tests/fuzz --hypothesis-profile=long -p no:cacheprovider \\
          --hypothesis-show-statistics -q

  Pin a seed to replay a campaign (``--hypothesis-seed=1234``); add ``-x`` to stop at the
  first failure. A finding becomes a regression case: an ``@example(...)`` on the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.server import ScriptedServer
from tests.fuzz.strategies import LONG_FACTOR

_COMMON = {
    "deadline": None,  # I/O to 127.0.0.1 and JSONata bounds make single cases slow, not wrong
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "database": None,  # never writes .hypothesis/ into a tree several people work in
    "print_blob": True,
}

settings.register_profile("fuzz", derandomize=True, **_COMMON)
settings.register_profile("long", derandomize=False, max_examples=100 * LONG_FACTOR, **_COMMON)


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fuzz_client() -> Iterator[httpx.Client]:
    """A pooled client of our own (keep-alive to the scripted server; no shared state)."""
    with httpx.Client() as client:
        yield client
