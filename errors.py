"""The one error type users see: a problem with their input, flags, files or machine, not a bug.

Helpers raise a UserError (or one of its kinds: CheckpointError, DatasetError, DeviceError, ...) whose message
names the flag or file and says what to do; each script's main() prints it as one line `error: ...` and exits with
status 1. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the flag or file and what to do."""
