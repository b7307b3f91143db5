"""How pyreport is packaged: one copy of its metadata (pyreport/pyproject.toml) serving both
`pip install ./pyreport` and `pip install .` at the root, under a distribution name that cannot
be confused with the unrelated `pyreport` on the package index."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import pytest

import pyreport

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads TOML")

REPO = Path(__file__).resolve().parents[2]
ROOT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGE = tomllib.loads((REPO / "pyreport" / "pyproject.toml").read_text())


def test_one_copy_of_the_metadata() -> None:
    assert "project" not in ROOT and "maturin" not in ROOT.get("tool", {}), \
        "the root pyproject.toml must only point to pyreport/pyproject.toml"
    assert ROOT["build-system"]["requires"] == PACKAGE["build-system"]["requires"]
    assert ROOT["build-system"]["build-backend"] == "_root_backend"
    assert (REPO / ROOT["build-system"]["backend-path"][0] / "_root_backend.py").is_file()
    assert PACKAGE["build-system"]["build-backend"] == "maturin"
    assert PACKAGE["project"]["name"] == "sequent-pyreport"
    maturin = PACKAGE["tool"]["maturin"]
    assert maturin["module-name"] == "pyreport._native"
    here = REPO / "pyreport"
    assert (here / maturin["manifest-path"]).is_file() and (here / maturin["python-source"] / "pyreport").is_dir()


def test_the_root_backend_runs_maturin_in_pyreport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The root's backend calls maturin's hooks from pyreport/ with absolute directories. (A
    stand-in records the calls: the real build is what `pip install .` in the test run does.)"""
    import importlib
    import os
    import sys
    import types

    calls = []

    def hook(name: str):  # noqa: ANN202
        def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append((name, os.getcwd(), args, kwargs))
            return f"{name}-result"
        run.__name__ = name
        return run

    fake = types.ModuleType("maturin")
    for name in ("build_wheel", "build_sdist", "prepare_metadata_for_build_wheel", "get_requires_for_build_wheel"):
        setattr(fake, name, hook(name))
    monkeypatch.setitem(sys.modules, "maturin", fake)
    monkeypatch.syspath_prepend(str(REPO / "pyreport"))
    monkeypatch.delitem(sys.modules, "_root_backend", raising=False)
    backend = importlib.import_module("_root_backend")
    monkeypatch.chdir(tmp_path)

    assert backend.build_wheel("wheels", None, "meta") == "build_wheel-result"
    assert backend.build_sdist(sdist_directory="out") == "build_sdist-result"
    assert backend.prepare_metadata_for_build_wheel("m") == "prepare_metadata_for_build_wheel-result"
    assert backend.get_requires_for_build_wheel() == "get_requires_for_build_wheel-result"
    here = str(REPO / "pyreport")
    assert calls == [
        ("build_wheel", here, (str(tmp_path / "wheels"), None, str(tmp_path / "meta")), {}),
        ("build_sdist", here, (), {"sdist_directory": str(tmp_path / "out")}),
        ("prepare_metadata_for_build_wheel", here, (str(tmp_path / "m"),), {}),
        ("get_requires_for_build_wheel", here, (), {}),
    ]
    assert os.getcwd() == str(tmp_path)  # and back
    # Hooks maturin lacks are not offered either (frontends then use their fallbacks).
    assert not hasattr(backend, "build_editable") and not hasattr(backend, "prepare_metadata_for_build_editable")
    sys.modules.pop("_root_backend", None)


def test_installed_distribution() -> None:
    dist = md.distribution("sequent-pyreport")
    assert dist.version == pyreport.__version__
    assert dist.metadata["Name"] == "sequent-pyreport"
    # Its files are the `pyreport` package, native core included (an editable install, e.g.
    # `maturin develop`, lists a path file instead).
    files = {str(f) for f in dist.files or []}
    if '"editable": true' not in (dist.read_text("direct_url.json") or ""):
        assert "pyreport/__init__.py" in files and any(f.startswith("pyreport/_native") for f in files)
    # The extras of pyproject.toml, as installed.
    requires = " ".join(dist.requires or [])
    for extra in PACKAGE["project"]["optional-dependencies"]:
        assert f'extra == "{extra}"' in requires or f"extra == '{extra}'" in requires, extra
    with pytest.raises(md.PackageNotFoundError):
        md.distribution("pyreport")  # the unrelated 2009 package is not what was installed
