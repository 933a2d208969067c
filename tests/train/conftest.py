import pytest

from _trainkit import make_images


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root holding a few synthetic training images (``train/Syn``)."""
    return make_images(tmp_path_factory.mktemp("data"))
