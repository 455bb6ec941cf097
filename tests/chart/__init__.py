"""Tests of the Helm chart in ``chart/``."""
