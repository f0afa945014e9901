"""The one exception type for mistakes a user can make; the CLI turns it into one line and exit 2."""


class UserError(Exception):
    """A problem with the user's input (path, file, class name, option), not a bug."""


def first_line(error: Exception, limit: int = 300) -> str:
    """An exception's first line (its type where it has no message), at most `limit` characters: a
    library's own failure told in a UserError's one line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def last_line(output: str) -> str:
    """The last line a child process wrote ("?" if none): where its one-line error, or the end of its
    traceback, sits."""
    return (output.strip().splitlines() or ["?"])[-1]
