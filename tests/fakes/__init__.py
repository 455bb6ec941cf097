"""In-memory stand-ins of the components the unit tier does not start."""
