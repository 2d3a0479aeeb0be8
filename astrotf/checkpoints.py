"""The ``checkpoints/`` folder of a run: written so that a process killed at any moment leaves
only complete checkpoints behind, and read so that a damaged one is never loaded.

A checkpoint ``ckpt-N`` (``N``: the optimisation step) is a ``tf.train.Checkpoint`` written
into a hidden staging folder, then moved into place one rename at a time, its data shards
first and its ``.index`` last: a ``ckpt-N.index`` therefore means every shard is there. The
``checkpoint`` state file (TensorFlow's, so ``tf.train.latest_checkpoint`` still reads the
folder) is rewritten atomically afterwards, and the oldest checkpoints beyond the last
:data:`KEEP` are removed index first.

Resuming does not trust the state file: :func:`complete_checkpoints` lists every ``ckpt-N``
whose index and shards are all present, newest first (a process killed between the
renames and the state file still resumes from its newest checkpoint; one killed while
replacing a checkpoint of the same step resumes from the complete staged one), and
:func:`unreadable` reads every tensor of one (checksums included) before it is restored.

Importing this module does not import TensorFlow; the functions that need it do so.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

#: How many of the newest checkpoints a run keeps.
KEEP = 3
STATE_FILE = "checkpoint"
_SHARD = re.compile(r"^(.+)\.data-(\d+)-of-(\d+)$")


def _complete_in(folder: Path) -> set[str]:
    """Names of the checkpoint prefixes in ``folder`` whose index and every data shard exist."""
    shards: dict[str, set[tuple[int, int]]] = {}
    indexed = set()
    for path in folder.iterdir():
        match = _SHARD.match(path.name)
        if match:
            shards.setdefault(match[1], set()).add((int(match[2]), int(match[3])))
        elif path.name.endswith(".index"):
            indexed.add(path.name[:-6])
    return {name for name in indexed
            if (parts := shards.get(name)) and len({total for _, total in parts}) == 1
            and {i for i, _ in parts} == set(range(next(iter(parts))[1]))}


def complete_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The complete checkpoint prefixes of ``folder``, newest first: ``folder/ckpt-N``, or for a step
    whose files were being moved into place when the process died, ``folder/.ckpt-N.partial/ckpt``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {int(name[5:]): folder / name for name in _complete_in(folder) if re.fullmatch(r"ckpt-\d+", name)}
    for staging in folder.glob(".ckpt-*.partial"):
        number = staging.name[6:-8]
        if number.isdigit() and int(number) not in found and staging.is_dir() and "ckpt" in _complete_in(staging):
            found[int(number)] = staging / "ckpt"
    return [found[n] for n in sorted(found, reverse=True)]


def unreadable(prefix: str | os.PathLike) -> str | None:
    """Why the checkpoint ``prefix`` cannot be restored (its first error line), or None when every
    tensor reads back with a valid checksum."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # the reader raises OpError, ValueError, IndexError ... for damaged files
        return (str(err).strip().splitlines() or [type(err).__name__])[0]
    return None


def remove(prefix: Path) -> None:
    """Delete the files of checkpoint ``prefix``, its index first (so it is never half there and listed)."""
    prefix.with_name(prefix.name + ".index").unlink(missing_ok=True)
    for path in prefix.parent.glob(f"{prefix.name}.data-*"):
        path.unlink(missing_ok=True)


def remove_staging(folder: str | os.PathLike) -> None:
    """Delete the staging folders of checkpoints whose writing was killed."""
    for path in Path(folder).glob(".ckpt-*.partial"):
        shutil.rmtree(path, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file (or, on POSIX, a folder's entries) to the disk, so a power cut keeps what was renamed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on Windows: its renames are durable there anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_state(folder: Path, prefixes: list[Path]) -> None:
    """TensorFlow's ``checkpoint`` state file for ``prefixes`` (oldest first), written atomically and durably."""
    lines = [f'model_checkpoint_path: "{prefixes[-1].name}"']
    lines += [f'all_model_checkpoint_paths: "{p.name}"' for p in prefixes]
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    _fsync(tmp)
    os.replace(tmp, folder / STATE_FILE)
    _fsync(folder)


def write(checkpoint, folder: str | os.PathLike, number: int, keep: int = KEEP) -> Path:
    """Write ``checkpoint`` (a ``tf.train.Checkpoint``) as ``folder/ckpt-<number>``, atomically and
    durably (its files are flushed to the disk before they are renamed into place).

    Parameters
    ----------
    checkpoint : tf.train.Checkpoint
    folder : path
        The run's ``checkpoints/`` folder (created if missing).
    number : int
        The step; an existing checkpoint of that number is replaced.
    keep : int
        How many of the newest complete checkpoints stay.

    Returns
    -------
    Path
        The checkpoint prefix.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".ckpt-{number}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    checkpoint.save_counter.assign_add(1)  # as tf.train.Checkpoint.save does: restore() expects it
    checkpoint.write(str(staging / "ckpt"))
    prefix = folder / f"ckpt-{number}"
    remove(prefix)  # an earlier one of this step (killed from here on, the staged one is resumed from)
    staged = sorted(staging.iterdir(), key=lambda p: p.name.endswith(".index"))  # the index last
    for path in staged:
        _fsync(path)  # on the disk before the rename makes it a checkpoint
    for path in staged:
        os.replace(path, folder / (prefix.name + path.name[len("ckpt"):]))
    _fsync(folder)
    shutil.rmtree(staging, ignore_errors=True)
    kept = [p for p in complete_checkpoints(folder) if p.parent == folder]
    write_state(folder, kept[:keep][::-1])
    for old in kept[keep:]:
        remove(old)
    return prefix
