"""A model folder's versions side by side (TF Serving's layout), changed so that a process killed
at any moment leaves every earlier version whole.

:func:`install_version` moves a staged export (see :mod:`astrotf.export`) into a model folder:
the version's SavedModel folder by one rename, the top-level files (the newest version's
``model.keras``, ``model.onnx``, engines, ``metadata.json``) one rename at a time under an
:data:`INSTALLING` marker, after the previous newest version's own copies are safe in its
``assets.extra/astrotf/``. Loading a folder with the marker is refused; exporting again with
``--force`` finishes the switch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


#: Where a version that is not the newest keeps its own model.keras, model.onnx and metadata.json.
VERSION_FILES = Path("assets.extra") / "astrotf"
#: In a model folder whose top-level files are being switched to another version (its content).
INSTALLING = ".installing"


def versions_in(out: Path) -> list[int]:
    """The numbered SavedModel versions in the model folder ``out``, ascending."""
    if not out.is_dir():
        return []
    return sorted(int(p.name) for p in out.iterdir() if p.is_dir() and p.name.isdigit())


def _top_level_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _top_level_version(out: Path) -> int | None:
    """The version that the top-level ``metadata.json`` of ``out`` describes (None if unreadable)."""
    try:
        return json.loads((out / "metadata.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


def _keep_top_level(out: Path, version: int) -> None:
    """Copy the top-level files (``version``'s) into ``out/version/assets.extra/astrotf/``, as one rename."""
    keep = out / str(version) / VERSION_FILES
    staging = keep.with_name(f".{keep.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in _top_level_files(out):
        shutil.copy2(path, staging / path.name)
    shutil.rmtree(keep, ignore_errors=True)
    os.replace(staging, keep)


def replace_folder(staged: Path, target: Path) -> None:
    """Rename the staged SavedModel folder to ``target``, an existing one (``--force``) moved aside first."""
    retired = target.with_name(f".{target.name}.replaced")
    if target.exists():
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
    os.replace(staged, target)
    shutil.rmtree(retired, ignore_errors=True)


def _switch_top_level(tmp: Path, out: Path, version: int) -> None:
    """Replace the top-level files of ``out`` with those of ``tmp``, metadata.json last, under an
    :data:`INSTALLING` marker (a folder with one is half switched: loading it is refused)."""
    marker = out / INSTALLING
    (out / f"{INSTALLING}.tmp").write_text(str(version))
    os.replace(out / f"{INSTALLING}.tmp", marker)
    new = _top_level_files(tmp)
    for path in sorted(new, key=lambda p: p.name == "metadata.json"):
        os.replace(path, out / path.name)
    for path in _top_level_files(out):
        if path.name not in {p.name for p in new}:
            path.unlink()  # the earlier version's own file, kept in its assets.extra/astrotf/
    marker.unlink()


def install_version(tmp: Path, out: Path, version: int) -> None:
    """Move the staged export ``tmp`` (``tmp/version`` and its top-level files) into the model folder ``out``.

    A new folder is renamed into place. Otherwise ``version`` goes beside the other versions (an
    existing ``out/version``, allowed by ``--force``, is replaced). If it is the newest, the previous
    newest version's top-level files are first copied into that version's ``assets.extra/astrotf/``
    (one rename), then the new top-level files replace them one rename at a time, metadata.json last.
    A process killed at any step leaves every earlier version whole; running the export again with
    ``--force`` finishes it.
    """
    if not out.exists():
        os.replace(tmp, out)
        return
    previous = versions_in(out)
    newest = not previous or version >= max(previous)
    if not newest:  # the newest keeps the top level; this one's files go beside its SavedModel
        staged = tmp / str(version) / VERSION_FILES
        staged.mkdir(parents=True, exist_ok=True)
        for path in _top_level_files(tmp):
            shutil.copy2(path, staged / path.name)
    old = [v for v in previous if v != version]
    if newest and old and not (out / INSTALLING).exists() and _top_level_version(out) == max(old):
        _keep_top_level(out, max(old))
    replace_folder(tmp / str(version), out / str(version))
    if newest:
        _switch_top_level(tmp, out, version)


def version_history(out: Path, version: int, metadata: dict) -> dict:
    """``{version: {exported, steps}}`` of every version in ``out``, this one included."""
    history = {}
    if (out / "metadata.json").is_file():
        history = json.loads((out / "metadata.json").read_text()).get("versions", {})
    history = {k: v for k, v in history.items() if int(k) in versions_in(out)}
    history[str(version)] = {"exported": metadata.get("exported"), "steps": metadata.get("training", {}).get("steps")}
    return dict(sorted(history.items(), key=lambda kv: int(kv[0])))
