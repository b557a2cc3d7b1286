"""The one exception lowdim raises for bad input.

The command line turns a `LowdimError` into a single line on stderr and exit status 2, so its
message must name the bad value and say what would be valid, in one line.
"""


class LowdimError(ValueError):
    """Bad input from the user: a value, a file or a folder that lowdim cannot use."""
