"""A factory's data directory with a trained tokenizer and model, built once for all export tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aifactory.dataset.tokenizer import Tokenizer
from tests.export.models import build_factory


@pytest.fixture(scope="session")
def factory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tokenizer]:
    """(DATA_DIR, its tokenizer): tokenizer generation 1 and a trained model as latest and best."""
    data_dir = tmp_path_factory.mktemp("factory") / "data"
    return data_dir, build_factory(data_dir)


@pytest.fixture
def factory_settings(factory: tuple[Path, Tokenizer], make_settings: Any, tmp_path: Path) -> Any:
    """Settings on the shared DATA_DIR, with this test's own export folders."""

    def make(**overrides: Any) -> Any:
        values = {
            "data_dir": factory[0],
            "export_dir": str(tmp_path / "exports"),
            "lmstudio_models_dir": str(tmp_path / "lmstudio"),
            "ollama_bin": "ollama-not-installed",
            **overrides,
        }
        return make_settings(**values)

    return make
