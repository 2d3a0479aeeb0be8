"""What every command shares: one-line errors and a quiet TensorFlow."""

from __future__ import annotations

import atexit
import functools
import io
import os
import re
import sys
import threading

import click

from astrotf.errors import AstroTFError

#: A line of TensorFlow's C++ log (absl format: ``I0000 00:00:... file.cc:31] ...``) at the info, warning
#: or error level, or absl's notice about logging before its initialisation. Fatal (F) lines pass.
NATIVE_LOG = re.compile(rb"^(?:[IWE]\d{4} [\d:.]+ +\d+ [^ :\]]+:\d+\] |"
                        rb"WARNING: All log messages before absl::InitializeLog\(\) is called)")


def quiet_tensorflow(verbose: int) -> None:
    """Keep TensorFlow's C++ log (oneDNN notices, CUDA probes) off the terminal unless ``-vv``.

    ``TF_CPP_MIN_LOG_LEVEL`` does not reach the lines TensorFlow writes before absl's log is set up,
    so the process's file descriptor 2 goes through :func:`filter_native_stderr`.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if verbose >= 2:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    filter_native_stderr()


def filter_native_stderr() -> None:
    """Send C/C++ writes to file descriptor 2 through a filter that drops :data:`NATIVE_LOG` lines.

    Python's ``sys.stderr`` moves to a duplicate of the terminal, so our own messages, progress bars
    and tracebacks are not delayed; anything else native code writes is passed on line by line. Does
    nothing when ``sys.stderr`` is not the process's stderr (tests capturing output, say).
    """
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = io.TextIOWrapper(io.FileIO(terminal, "w", closefd=False), line_buffering=True,
                                  errors="backslashreplace")

    def pump() -> None:
        pending = b""
        with io.FileIO(read, "r") as pipe:
            while chunk := pipe.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not NATIVE_LOG.match(line):
                        os.write(terminal, line + b"\n")
        if pending and not NATIVE_LOG.match(pending):
            os.write(terminal, pending)

    thread = threading.Thread(target=pump, name="native-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last writer: the pump drains and ends
        thread.join(timeout=2.0)

    atexit.register(restore)


def friendly_errors(func):
    """Turn AstroTFError into ``Error: <one line>`` and exit status 2, and a Ctrl-C that no stage
    handles itself (during imports, caching or inference) into one line and exit status 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AstroTFError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted (Ctrl-C). Outputs are written whole or not at all: none is left half-written.",
                       err=True)
            sys.exit(130)

    return wrapper


def unsafe_model_option(func):
    """``--unsafe-model``: load ``.keras`` files holding Python code (Keras ``safe_mode=False``)."""

    def allow(ctx, param, value):
        if value:
            from astrotf.models.registry import allow_unsafe_models

            allow_unsafe_models()

    return click.option("--unsafe-model", is_flag=True, expose_value=False, callback=allow,
                        help="Load .keras models holding Python code (Lambda layers), which runs when they "
                             "load: only models you trust. By default they are refused (Keras safe mode).")(func)
