from pathlib import Path

import pytest

from dagster_platform.template.render import render

from .helpers import CUSTOM_ANSWERS


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rendered")
    return {"default": render(out / "default"), "custom": render(out / "custom", CUSTOM_ANSWERS)}
