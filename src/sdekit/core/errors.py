"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class UserError(ValueError):
    """Bad input from the user (shape, file, name, range). Its message is the whole explanation."""


class SlowPrecisionWarning(UserWarning):
    """A precision the device runs much slower than float32 (sdekit.core.placement.warn_slow_precision)."""
