"""cardkit: issue, personalize and diagnose smart cards."""

__version__ = "0.1.0"
