"""The errors users see. Each is shown as one line naming the file, option or field at fault,
never as a traceback. They subclass builtins too, so callers can catch them naturally (a
missing input is a FileNotFoundError, a bad value a ValueError, a failed write an OSError).

Which to raise where, so that one condition raises one type wherever it is found:
- click.BadParameter only in a click type or option callback that refuses one option's own
  value while click parses it (click names the option; exit status 2). click.UsageError only
  for the command line's shape, which click parses (an option given without its value).
- These errors everywhere else, in a command's body as in the library it calls: a wrong
  combination of options or a missing or malformed input is an InputError (exit status 1),
  the workspace's state a StateError, and so on.
- A plain ValueError or TypeError is a caller's bug (an argument no user input can produce),
  shown as `unexpected ValueError` with the hint to GLACIER_DEBUG's traceback.
"""
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
