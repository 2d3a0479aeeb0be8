"""The one exception type users see: a one-line message naming the file or option at fault."""


class AstroTFError(ValueError):
    """A user-facing error whose message is one line naming the file or option and the problem.

    The CLI prints ``str(error)`` and exits with status 2 instead of showing a traceback.
    """


def check_fields(config, checks) -> None:
    """Validate dataclass fields: ``checks`` is ``[(field, ok, expected), ...]``.

    Raises ``ValueError("`field` must be <expected>. Received: field=<value>")`` for the
    first check that fails, in the style of Keras' argument errors.
    """
    for name, ok, expected in checks:
        if not ok:
            msg = f"`{name}` must be {expected}. Received: {name}={getattr(config, name)!r}"
            raise ValueError(msg)
