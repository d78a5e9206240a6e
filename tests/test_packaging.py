"""What the package ships and says about itself: one version, its type hints (py.typed)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import hfstream

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_config() -> dict:
    import warnings

    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings():  # "ext-modules is experimental": known, and not what is tested here
        warnings.simplefilter("ignore")
        return read_configuration(ROOT / "pyproject.toml", expand=True)


def test_the_version_has_one_source():
    raw = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in raw["project"] and "version" in raw["project"]["dynamic"]
    # what setuptools writes into the package metadata is hfstream.__version__
    assert _setuptools_config()["project"]["version"] == hfstream.__version__


def test_py_typed_ships_with_the_package():
    assert (ROOT / "hfstream" / "py.typed").is_file()
    patterns = _setuptools_config()["tool"]["setuptools"]["package-data"]["hfstream"]
    assert any(fnmatch.fnmatch("py.typed", p) for p in patterns)
