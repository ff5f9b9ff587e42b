"""User-facing errors.

Anything a user can cause (a bad path, an empty folder, a corrupt image, an invalid option) raises
:class:`UserError`. The CLI prints its message on one line and exits with status 2, never a traceback.
"""


class UserError(Exception):
    """An error caused by the user's input; its message is shown as is, on one line."""
