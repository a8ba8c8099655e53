"""Errors a user can act on; the CLI prints them as one line (no traceback)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
