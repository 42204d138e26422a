"""The root of every error that is the user's input, not a bug: the CLI prints it in one line, exit 2.

Each subclass names what was wrong where: `ConfigError` the key path and file, `DataError` the file,
row and field, `CheckpointError` the file and tensor, `RunDirError` the run directory. Anything
else that escapes a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a config value, a file, a flag, a run directory); the message says what and where."""


class RunDirError(UserError, OSError):
    """A run directory cannot be used: locked by another run, not a directory, or not writable."""


class OutputPathError(UserError, OSError):
    """An output file cannot be written (checked before any work starts)."""


class InputError(UserError, ValueError):
    """An argument outside what a function or command accepts (a token id past the vocabulary, a flag)."""
