"""Tests of the blacklist service."""
