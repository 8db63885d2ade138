"""One error tree. User mistakes are ChainError subclasses and end the CLI with a message, no traceback."""


class ChainError(Exception):
    """Root of every error that is the user's to fix (config, inputs) or a step's clean failure."""

    exit_code = 1


class ConfigError(ChainError, ValueError):
    """The configuration file is wrong: unknown key, bad value, missing section."""

    exit_code = 2


class InputError(ChainError, ValueError):
    """An input file exists but is unusable: no CRS, corrupt, wrong fields, empty overlap."""

    exit_code = 3


class InputMissingError(InputError, FileNotFoundError):
    """An input file or folder named in the config does not exist."""

    exit_code = 3


class StepError(ChainError, RuntimeError):
    """A step could not produce its outputs (e.g. a class with too few polygons)."""

    exit_code = 1


class StateError(ChainError, RuntimeError):
    """The work folder is not in the state the request needs (e.g. --from a step never run)."""

    exit_code = 4


class Problems(ChainError):
    """Several problems found at once (``chain validate`` reports every one); exits like the first."""

    def __init__(self, problems: list[ChainError]):
        self.problems = problems
        self.exit_code = problems[0].exit_code
        lines = [str(p) for p in problems]
        super().__init__(lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  - " + "\n  - ".join(lines))

    @classmethod
    def collect(cls, problems: list[ChainError]) -> None:
        """Raise the problems (the one itself when alone, deduplicated by message); nothing when there are none."""
        unique = list({str(p): p for p in problems}.values())
        if len(unique) == 1:
            raise unique[0]
        if unique:
            raise cls(unique)
