"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's input, reported as one line that says what to do.

    Command-line entry points catch it, print ``error: <message>`` to stderr and exit
    with status 2; nothing else should be written once it is raised.
    """
