import copy
from pathlib import Path

import pytest

from dagster_platform.template.render import platform_context, render

from .helpers import CUSTOM_ANSWERS


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Two repos: the template's default answers on this repository's company and environments (as `make
    new-usercode` passes them), and CUSTOM_ANSWERS (other answers, the fixture company's three environments)."""
    out = tmp_path_factory.mktemp("rendered")
    return {
        "default": render(out / "default", platform_context()),
        "custom": render(out / "custom", copy.deepcopy(CUSTOM_ANSWERS)),
    }
