"""The one exception the suite raises for bad input, so the command line can print it as one line."""


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message names the key and what is allowed."""
