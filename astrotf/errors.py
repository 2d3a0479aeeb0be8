"""The one exception type users see: a one-line message naming the file or option at fault."""


class AstroTFError(ValueError):
    """A user-facing error whose message is one line naming the file or option and the problem.

    The CLI prints ``str(error)`` and exits with status 2 instead of showing a traceback.
    """
