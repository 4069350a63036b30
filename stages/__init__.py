"""Pure processing stages: decode, flow, warp, dream, encode, spherical maths and metadata.

Stages never import `pipeline`. They signal bad user input with `InputError`; the CLI turns it into
one `error: ...` line and exit code 2.
"""


class InputError(Exception):
    """The user's input (file, option, config value) is wrong. Message is one line, shown as is."""
