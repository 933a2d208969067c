"""User-facing errors: the CLI prints them as one line and exits with their code."""


class BinsrError(Exception):
    """An error caused by the user's input (files, options, data); printed without a traceback."""

    exit_code = 1


class UsageError(BinsrError):
    """Wrong options or missing data folders: exit code 2."""

    exit_code = 2
