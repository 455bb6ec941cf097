"""The HTTP interface, one blueprint per concern (README, the first section; docs/service.md)."""
