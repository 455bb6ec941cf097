"""Loads the test tiers plugin (``tests/tiers.py``) before pytest parses its options."""

pytest_plugins = ("tests.tiers",)
