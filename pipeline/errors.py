"""Error types and exit codes.

0 done; 2 the user's input or config is wrong (one `error: ...` line, no traceback); 1 internal failure.
"""

from stages.common import InputError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


class ConfigError(InputError):
    """A config key is unknown, mistyped or out of range; the message starts with the dotted key."""


__all__ = ["InputError", "ConfigError", "EXIT_OK", "EXIT_INTERNAL", "EXIT_USER"]
