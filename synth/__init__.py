"""synth: turn test-time compute into training data."""

__version__ = "0.1.0"
