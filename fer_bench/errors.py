"""The one exception type for mistakes a user can make; the CLI turns it into one line and exit 2."""


class UserError(Exception):
    """A problem with the user's input (path, file, class name, option), not a bug."""
