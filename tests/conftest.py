import matplotlib

matplotlib.use("Agg")  # headless: tests never open a window (same as MPLBACKEND=Agg)

import pytest  # noqa: E402
import torch  # noqa: E402

from dlcourse.grading.sandbox import available  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and two xdist workers on 2 cores must not oversubscribe them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SANDBOX, NO_SANDBOX_WHY = available()


@pytest.fixture(scope="session")
def sandbox() -> str:
    """The sandbox grading tests use: bubblewrap where it runs (CI installs it), else none, so the rest of the
    grading tests still run; tests of the sandbox itself use ``bwrap``."""
    return SANDBOX


@pytest.fixture(scope="session")
def bwrap() -> str:
    """For tests of the sandbox itself: skips, with the reason, where bubblewrap cannot run."""
    if SANDBOX != "bwrap":
        pytest.skip(f"needs bubblewrap: {NO_SANDBOX_WHY}")
    return SANDBOX
