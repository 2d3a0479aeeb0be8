"""The ``astrotf`` command line (click): one module per command group, each only parsing options and
calling the library.

Arguments are validated before TensorFlow is imported, so a typo answers in a
fraction of a second with a one-line error naming the option or file, and every
:class:`~astrotf.errors.AstroTFError` from deeper down is shown the same way
(exit status 2) instead of a traceback.
"""

from __future__ import annotations

import logging

import click

from astrotf import __version__
from astrotf.cli._common import quiet_tensorflow
from astrotf.cli.infer import infer
from astrotf.cli.models import evaluate, export, models
from astrotf.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="astrotf")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug and TensorFlow's own log).")
def main(verbose: int) -> None:
    """Denoise astronomical images without damaging the science in them."""
    quiet_tensorflow(verbose)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        logging.getLogger("absl").setLevel(logging.WARNING)  # checkpoint sharding chatter


for command in (train, infer, export, evaluate, models):
    main.add_command(command)
