"""The one exception type that reaches the user as a one-line message."""


class NvcError(Exception):
    """A problem with the user's input, file or environment, stated in one line."""
