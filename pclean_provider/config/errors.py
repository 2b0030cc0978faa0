"""The one exception type for bad imaging configuration."""

from __future__ import annotations

from pclean_provider.errors import PcleanInputError


class ConfigError(PcleanInputError):
    """A configuration that cannot be imaged; the message names the parameter and the fix.

    ``parameters`` lists the offending parameter names (flat tclean-style names) so that callers
    (the CLI, Airflow operators) can point at them without parsing the message.
    """

    def __init__(self, message: str, parameters: list[str] | tuple[str, ...] | str | None = None):
        super().__init__(message)
        if isinstance(parameters, str):
            parameters = [parameters]
        self.parameters: list[str] = list(parameters or [])

    @property
    def parameter(self) -> str | None:
        return self.parameters[0] if self.parameters else None
