"""The HTTP interface, one blueprint per concern (docs/architecture.md; docs/service.md)."""
