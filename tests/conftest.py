import matplotlib

matplotlib.use("Agg")  # headless: tests never open a window (same as MPLBACKEND=Agg)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and two xdist workers on 2 cores must not oversubscribe them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
