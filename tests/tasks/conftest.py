import pytest

from cnnlstm.data.synthetic import make_moving_digits

collect_ignore = ["conftest.py"]  # keep --doctest-modules from importing it beside tests/data/conftest.py


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory):
    """8 classes x (3 train + 1 test) moving-digit videos, 32x32, 8-12 frames."""
    root = tmp_path_factory.mktemp("videos")
    return make_moving_digits(root, train_per_class=3, test_per_class=1, sizes=((32, 32),), lengths=(8, 12))
