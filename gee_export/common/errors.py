"""The errors users see. Each is shown as one line naming the file, option or field at fault,
never as a traceback. They subclass builtins too, so callers can catch them naturally (a
missing input is a FileNotFoundError, a bad value a ValueError, a failed write an OSError)."""
from __future__ import annotations


class GlacierError(Exception):
    """Base of every error this toolkit reports to users as one line."""


class InputError(GlacierError, ValueError):
    """A bad option value or a malformed input file."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input file, directory or upstream product that does not exist."""


class StateError(GlacierError, RuntimeError):
    """The workspace is not in a state to proceed: an unfinished input, a product made with
    other parameters, a corrupt file."""


class BusyError(StateError):
    """Another process holds the output this command would write."""


class WriteError(GlacierError, OSError):
    """An output cannot be written (read-only workspace, full disk, no permission)."""


class ServiceError(GlacierError, ConnectionError):
    """A remote service (Earth Engine, Cloud Storage) refused or failed a request."""
