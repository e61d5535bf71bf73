"""Resolve 'package.module:attribute' strings from configs into Python objects.

One import rule for every launch mode: the config file's folder and the working directory are
importable, as they are for `python -m`. Without it the same config imports in one mode and not
in another: `python -m harness` (how `--workers` starts its processes) puts the working directory
on `sys.path`, the `harness` console script does not, and a Slurm job may start elsewhere.

The training entry point wraps the run in `importable(import_roots(config_dir))`; `import_object`
called inside searches those folders, and outside it searches the working directory. The folders
leave `sys.path` again when the context ends; modules imported meanwhile stay in `sys.modules`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import sysconfig
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_ACTIVE: list[tuple[Path, ...]] = []  # folders of the enclosing `importable` contexts, innermost last


def is_import_path(name: str) -> bool:
    """Whether a config value names user code, `package.module:attribute`."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr)


def import_roots(config_dir: Path | str | None, cwd: Path | str | None = None) -> tuple[Path, ...]:
    """The folders user code is imported from: the config file's folder first, then the cwd.

    The config's folder comes first so a config run from elsewhere finds the code beside it.
    """
    folders = [Path(config_dir)] if config_dir is not None else []
    folders.append(Path(cwd) if cwd is not None else Path.cwd())
    return tuple(dict.fromkeys(folder.resolve() for folder in folders))


@contextlib.contextmanager
def importable(folders: Sequence[Path]) -> Iterator[tuple[Path, ...]]:
    """Put `folders` at the front of `sys.path` for the duration of the context."""
    roots = tuple(Path(folder).resolve() for folder in folders)
    entries = [str(root) for root in roots]
    sys.path[:0] = entries
    _ACTIVE.append(roots)
    importlib.invalidate_caches()  # a module written since the folder was last listed is found
    try:
        yield roots
    finally:
        _ACTIVE.pop()
        for entry in entries:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def search_folders() -> tuple[Path, ...]:
    """What `import_object` searches by default: the active roots, else the working directory."""
    return _ACTIVE[-1] if _ACTIVE else (Path.cwd().resolve(),)


def import_object(path: str, search: Sequence[Path] | None = None) -> Any:
    """Import `pkg.module:attr` with `search` (default `search_folders()`) importable.

    Raises ImportError with a message that names the path, the folders searched, and whether the
    module was not found or failed while importing (with the file and line of the failure).
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f"{path!r} is not an import path of the form 'package.module:name'")
    folders = tuple(search) if search is not None else search_folders()
    with importable(folders) as roots:
        module = _import_module(module_name, path, roots)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = getattr(module, "__file__", None) or module_name
            raise ImportError(f"module {module_name!r} ({where}) has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj


def _import_module(module_name: str, path: str, roots: tuple[Path, ...]) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and _is_parent(err.name, module_name):
            raise ImportError(
                f"module {module_name!r} of {path!r} is not found: ModuleNotFoundError: {err}. "
                f"Searched {_listing(roots)} and the installed packages. Put "
                f"{module_name.replace('.', os.sep)}.py beside the config file or in the working "
                "directory, or install its package"
            ) from err
        raise ImportError(
            f"module {module_name!r} of {path!r} does not import: ModuleNotFoundError: {err}"
            f"{user_location(err)}: install the missing package (searched {_listing(roots)})"
        ) from err
    except Exception as err:  # any error while importing user code is reported the same way
        raise ImportError(
            f"module {module_name!r} of {path!r} does not import: {type(err).__name__}: {err}"
            f"{user_location(err)}"
        ) from err


def _is_parent(missing: str, module_name: str) -> bool:
    """True when `missing` is `module_name` or one of its packages, not something it imports."""
    return module_name == missing or module_name.startswith(missing + ".")


def _listing(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots) if roots else "no folders"


def user_location(err: BaseException) -> str:
    """' (at FILE line N)' for the innermost frame of user code in `err`, or ''.

    Frames of Python's import machinery, of this package, and (when user code is on the stack)
    of installed libraries are skipped: the location is the user's own line that raised or
    called the library that raised (for a SyntaxError, the bad line itself).
    """
    if isinstance(err, SyntaxError) and err.filename:
        return f" (at {err.filename} line {err.lineno})"
    harness_dir = str(Path(__file__).resolve().parent)
    frames = [
        frame
        for frame in traceback.extract_tb(err.__traceback__)
        if not frame.filename.startswith("<frozen") and not frame.filename.startswith(harness_dir)
    ]
    own = [frame for frame in frames if not frame.filename.startswith(_library_dirs())]
    chosen = own or frames
    if not chosen:
        return ""
    return f" (at {chosen[-1].filename} line {chosen[-1].lineno})"


def _library_dirs() -> tuple[str, ...]:
    """Folders of the standard library and installed packages."""
    paths = sysconfig.get_paths()
    return tuple(dict.fromkeys(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths))
