"""``python -m astrotf.cli``."""

from astrotf.cli import main

main()
