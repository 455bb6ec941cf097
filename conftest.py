"""Loads the test tiers plugin (``tests/tiers.py``) before pytest parses its options.

``pytester`` runs pytest sessions inside a test, for the tests of that plugin.
"""

pytest_plugins = ("tests.tiers", "pytester")
