"""Errors a user sees: each names the file, the key path and, when known, the line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Problem:
    key: str  # dotted key path, "" for the whole file
    message: str
    line: int | None = None
    column: int | None = None

    def render(self, file: str | None) -> str:
        where = file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class TenantFPMError(Exception):
    """An error meant for the user: printed as is, never with a traceback."""


class ConfigError(TenantFPMError):
    def __init__(self, file: str | None, problems: list[Problem]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(file) for p in problems))


class MasterNotRunning(TenantFPMError):
    pass
