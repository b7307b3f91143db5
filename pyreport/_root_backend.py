"""The PEP 517 build backend of the repository root's pyproject.toml.

`pip install .` at the root builds the package that pyreport/pyproject.toml describes (the one
copy of its metadata and maturin settings): each hook below is maturin's own, run with
pyreport/ as the working directory, where maturin reads its pyproject.toml. Directories handed
in by the frontend are made absolute first, since they may be relative to the root.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import maturin

HERE = Path(__file__).resolve().parent

# The hooks maturin offers; those it lacks (e.g. prepare_metadata_for_build_editable) stay
# undefined here too, so frontends use their fallbacks exactly as with maturin itself.
_HOOKS = (
    "get_requires_for_build_wheel",
    "get_requires_for_build_sdist",
    "get_requires_for_build_editable",
    "prepare_metadata_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "build_wheel",
    "build_sdist",
    "build_editable",
)
# Arguments that are directories (by name, or position in the hook's signature).
_DIRECTORIES = ("wheel_directory", "sdist_directory", "metadata_directory")


def _in_pyreport(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def run(*args: Any, **kwargs: Any) -> Any:
        # Positional: the first argument of build_* / prepare_* hooks is a directory, and the
        # third (metadata_directory) of build_wheel / build_editable.
        args_list = list(args)
        if hook.__name__.startswith(("build_", "prepare_")) and args_list:
            args_list[0] = os.path.abspath(args_list[0])
        if hook.__name__ in ("build_wheel", "build_editable") and len(args_list) > 2 and args_list[2]:
            args_list[2] = os.path.abspath(args_list[2])
        for name in _DIRECTORIES:
            if kwargs.get(name):
                kwargs[name] = os.path.abspath(kwargs[name])
        before = os.getcwd()
        os.chdir(HERE)
        try:
            return hook(*args_list, **kwargs)
        finally:
            os.chdir(before)

    return run


for _name in _HOOKS:
    if hasattr(maturin, _name):
        globals()[_name] = _in_pyreport(getattr(maturin, _name))
