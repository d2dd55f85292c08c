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


class CorruptArtifactError(MonosemanticError):
    """A file a stage wrote is unreadable, truncated or of the wrong shape.  The message names the file and the
    stage that rebuilds it; ``monosemantic run`` on the same directory re-runs that stage."""

    def __init__(self, path, problem: str, stage: str | None = None, fix: str | None = None):
        self.path, self.problem, self.stage = str(path), problem, stage
        if fix is None:
            fix = (f"rerun `monosemantic run --out {_run_dir_of(path)}` to rebuild it (stage {stage})" if stage
                   else "delete it and rerun the command that wrote it")
        super().__init__(f"{path} is corrupt: {problem}; {fix}")


class RunLockedError(MonosemanticError):
    """Another live process is working in the same run directory."""


def _run_dir_of(path) -> str:
    """The run directory holding ``path`` (the nearest parent with a run.json), for messages."""
    from pathlib import Path

    for parent in Path(path).absolute().parents:
        if (parent / "run.json").exists():
            return str(parent)
    return "<run dir>"
