"""Errors that name the problem and the fix. Every one subclasses MonosemanticError so callers can catch all."""


class MonosemanticError(Exception):
    """Base class: the message always says what went wrong and what to do about it."""


class ConfigError(MonosemanticError, ValueError):
    """A config, preset, spec or argument is invalid."""


class CorpusError(MonosemanticError, ValueError):
    """A corpus source is missing, empty or unreadable."""


class CheckpointMismatchError(MonosemanticError):
    """A checkpoint or run directory was written by a different config."""


class TrainingDivergedError(MonosemanticError, FloatingPointError):
    """A loss became NaN/inf; the last good checkpoint is kept."""
