"""Errors a user can act on: each names the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class ParanasalError(Exception):
    """Base class of every error this package raises on purpose (shown without a traceback)."""


class InputError(ParanasalError):
    """Bad input: a file, a field in it, and what was expected instead.

    >>> str(InputError("scan.nii.gz", "image is 2D (256 x 256)", expected="a 3D volume"))
    'scan.nii.gz: image is 2D (256 x 256); expected a 3D volume'
    """

    def __init__(
        self,
        source: Union[str, Path, None],
        problem: str,
        *,
        field: Optional[str] = None,
        expected: Optional[str] = None,
    ):
        self.source = None if source is None else str(source)
        self.problem = problem
        self.field = field
        self.expected = expected
        where = self.source or "input"
        if field:
            where += f" [{field}]"
        text = f"{where}: {problem}"
        if expected:
            text += f"; expected {expected}"
        super().__init__(text)


class ConfigError(InputError):
    """A configuration value or combination that cannot work."""


class CheckpointError(InputError):
    """A model file that is corrupt, unsafe, or built for another configuration."""


class CancelledError(ParanasalError):
    """Work stopped because the user asked it to."""
