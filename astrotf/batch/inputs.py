"""The bookkeeping of a batch: output paths, shards, input lists, the manifest, one-line errors.

:func:`astrotf.batch.run` uses these; nothing here reads an image or loads a model.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from astrotf.errors import AstroTFError

log = logging.getLogger("astrotf.batch")


def output_path(image: Path, output: Path | None = None, out_dir: Path | None = None) -> Path:
    """``output``, else ``<stem>_denoised.<ext>`` in ``out_dir`` or beside the input (``.fits.gz`` kept whole)."""
    from astrotf import io

    suffix = next((s for s in io.SUPPORTED_SUFFIXES if image.name.lower().endswith(s)), image.suffix)
    stem = image.name[: len(image.name) - len(suffix)]
    if output is not None:
        return output
    return (out_dir or image.parent) / f"{stem}_denoised{image.name[len(stem):]}"


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``"I/N"`` as ``(I, N)`` with ``0 <= I < N``; None stays None."""
    if value is None:
        return None
    try:
        index, count = (int(v) for v in value.split("/"))
    except ValueError:
        raise AstroTFError(f"--shard must be I/N, e.g. 0/4. Received: --shard={value}") from None
    if not (count >= 1 and 0 <= index < count):
        raise AstroTFError(f"--shard I/N needs 0 <= I < N. Received: --shard={value}")
    return index, count


def collect_inputs(images: Iterable[Path], from_list: Path | None = None,
                   shard: tuple[int, int] | None = None) -> list[Path]:
    """Inputs from the command line and a list file (one path per line, # comments), then this shard's share."""
    paths = list(images)
    if from_list is not None:
        for line in from_list.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(Path(line))
    paths = list(dict.fromkeys(paths))
    if not paths:
        raise AstroTFError("no input images: give IMAGE arguments or --from-list FILE")
    if shard is not None:
        index, count = shard
        paths = sorted(paths)[index::count]  # sorted: every shard sees the same order
    return paths


def check_outputs(n_inputs: int, output: Path | None, out_dir: Path | None, skip_existing: bool,
                  force: bool) -> None:
    """Refuse combinations of output options that cannot work."""
    if output is not None and n_inputs > 1:
        raise AstroTFError("-o/--output takes one input image; use --out-dir for several")
    if output is not None and out_dir is not None:
        raise AstroTFError("use either -o/--output or --out-dir, not both")
    if skip_existing and force:
        raise AstroTFError("use either --skip-existing or --force, not both")


class Manifest:
    """JSON lines, one per input, each appended by a single ``write`` to a file opened with
    ``O_APPEND``: a crash loses at most one line, and processes sharing the file never interleave
    their lines. Without a ``path`` it writes nothing. A write that fails (a full disk) or is cut
    short stops the manifest with one logged line; the batch goes on.

    Raises
    ------
    AstroTFError
        If the file cannot be opened (a read-only folder, say).
    """

    def __init__(self, path: Path | None):
        self.fd, self.path = None, path
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as err:
                raise AstroTFError(f"{path}: cannot write the manifest ({err.strerror or err})") from None

    def write(self, **record) -> None:
        if self.fd is None:
            return
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        line = (json.dumps(record, default=str) + "\n").encode("utf-8")
        try:
            written = os.write(self.fd, line)
        except OSError as err:
            written, reason = -1, err.strerror or str(err)
        else:
            reason = "disk full: its last line is cut short"
        if written != len(line):
            log.warning("%s: manifest stopped (%s)", self.path, reason)
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def unexpected_error(image: Path, err: Exception) -> str:
    """One line for an error astrotf did not foresee, naming the file (the traceback goes to the debug log)."""
    log.debug("%s failed", image, exc_info=err)
    if isinstance(err, MemoryError):
        return f"{image}: out of memory; try a smaller --tile or --batch-size"
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{image}: unexpected {type(err).__name__}{': ' + first if first else ''} (run with -vv for the traceback)"


