"""The one user-error class: a mistake in what a user asked for (a config value, a path, a file, a device).

Every command catches it and prints one `error:` line, exit code 2, with no traceback. Anything else that
escapes is a looplm bug.
"""


class UserError(Exception):
    """Bad input from the user. The message says what is wrong and, where it can, what to do."""
