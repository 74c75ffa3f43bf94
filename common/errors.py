"""The project's user-facing errors.

Each one carries what a user needs to fix the problem (which file, which key, what was expected). The
entry points in `common.pipeline` print them as one clean message and exit with status 2, never as a
stack trace from deep inside torch.
"""

from __future__ import annotations

from pathlib import Path


class ManyheadsError(Exception):
    """Base class: an error caused by the user's input, config or files, not by a bug."""


class ConfigError(ManyheadsError, ValueError):
    """A config value outside what the code accepts. `key` is dotted; entry points prefix the section."""

    def __init__(self, key: str, value, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"bad config value {key}={value!r}: expected {expected}")

    def within(self, section: str) -> ConfigError:
        """The same error with its key prefixed by the config section it came from (e.g. `model`)."""
        return ConfigError(f"{section}.{self.key}", self.value, self.expected)


class DatasetError(ManyheadsError):
    """A dataset that is missing or malformed. Names the path, what was expected and the data card."""

    def __init__(self, path: str | Path, expected: str, card: str, problem: str = "dataset not found"):
        self.path, self.expected, self.card, self.problem = Path(path), expected, card, problem
        super().__init__(
            f"{problem}: {path}\n  expected: {expected}\n  see data_cards/{card}.md for how to obtain and lay it out"
        )


class InputError(ManyheadsError):
    """A user's file given to `predict` that cannot be read as the app's input."""

    def __init__(self, path: str | Path, expected: str, problem: str = "cannot read input"):
        self.path, self.expected = Path(path), expected
        super().__init__(f"{problem}: {path}\n  expected: {expected}")


class UnsafeFileError(ManyheadsError):
    """A checkpoint or export that would execute code on load (pickled objects, foreign `_target_`s)."""


class WeightsError(ManyheadsError):
    """A weights file (an export's `model.safetensors`) that cannot be loaded into its model. Names the tensor."""

    def __init__(self, path: str | Path, problem: str, tensor: str | None = None, expected: str | None = None):
        self.path, self.problem, self.tensor, self.expected = Path(path), problem, tensor, expected
        where = f" in tensor {tensor!r}" if tensor else ""
        super().__init__(f"{problem}{where}: {path}" + (f"\n  expected: {expected}" if expected else ""))


def check_choice(key: str, value, allowed) -> None:
    """Raise ConfigError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(key, value, f"one of {sorted(allowed)}")


def check_range(key: str, value, low=None, high=None, *, low_inclusive=True, high_inclusive=True) -> None:
    """Raise ConfigError unless `low <= value <= high` (bounds optional; exclusivity per side)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        brackets = ("[" if low_inclusive else "(") + f"{lo}, {hi}" + ("]" if high_inclusive else ")")
        raise ConfigError(key, value, f"a number in {brackets}")
