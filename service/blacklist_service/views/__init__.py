"""The HTTP interface, one blueprint per concern (SPEC §6)."""
