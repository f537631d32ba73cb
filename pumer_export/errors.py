"""Errors that reach the user as one line.

Every mistake a user can make (a wrong path, a bad setting, an unsupported
option) raises :class:`PumerExportError` with a message that names the problem
and, where there is one, the fix. The CLI prints ``error: <message>`` and exits
with status 2; it never shows a traceback for these.
"""


class PumerExportError(Exception):
    """A user-facing error: the message is printed as one line."""


class ConfigError(PumerExportError, ValueError):
    """Invalid PuMer settings or model configuration."""


class CheckpointError(PumerExportError):
    """A checkpoint that cannot be read, converted or is not what was expected."""


class MissingDependencyError(PumerExportError):
    """An optional component (TensorRT, CUDA, the plugin library) is not available."""


class ParityError(PumerExportError):
    """A backend does not reproduce the reference within the tolerances."""


def missing(path, what: str, hint: str = "check the path") -> PumerExportError:
    """The error for a path that does not exist, worded the same by every command: ``WHAT PATH does not exist``."""
    return PumerExportError(f"{what} {path} does not exist; {hint}")
