"""A real dockerd and the locally made base images, shared by the image tests (tests/slow/images.py makes them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_service
from tests.slow import images


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The running dockerd, or one started for this run; skipped without docker.io (a failure on CI)."""
    try:
        with images.dockerd(tmp_path_factory.mktemp("dockerd")):
            yield
    except images.DockerMissing as missing:
        missing_service(str(missing))


@pytest.fixture(scope="session")
def base_images(docker_daemon: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The Dockerfiles' base-image build arguments, naming images made here from Debian packages."""
    work = Path(tmp_path_factory.mktemp("rootfs"))
    try:
        return {
            "PYTHON_BASE": images.base_image(images.PYTHON, work),
            "NODE_BASE": images.base_image(images.NODE, work),
        }
    except images.DockerMissing as missing:
        missing_service(str(missing))
