"""Exception hierarchy of mixnas.

Every error a user can cause with bad input derives from :class:`MixnasError`, and the ones caused by a bad
value also derive from :class:`ValueError`, so library callers can catch either. The CLI turns any
``MixnasError`` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class MixnasError(Exception):
    """Root of every error mixnas raises on purpose."""


class ArchitectureError(MixnasError, ValueError):
    """An architecture record is inconsistent (bad kernel, width, stride, ...)."""


class BlockStringError(MixnasError, ValueError):
    """A block string cannot be decoded, or an architecture cannot be encoded in a grammar."""


class ConfigError(MixnasError, ValueError):
    """A YAML file (search space or experiment) is invalid; the message names the file and YAML path."""


class DataError(MixnasError, ValueError):
    """A data set path, format or file is missing or malformed; the message names the file."""


class LatencyTableError(MixnasError, ValueError):
    """A latency lookup table is malformed, of an unknown version, or lacks a signature."""


class ControllerError(MixnasError, ValueError):
    """A controller was used against its protocol (unknown or repeated suggestion id, bad state)."""


class RewardError(MixnasError, ValueError):
    """A reward or multi-objective function got values it cannot score."""


class RunError(MixnasError):
    """A run directory cannot be created, resumed or exported."""
