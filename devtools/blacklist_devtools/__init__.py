"""Development tooling: the local control plane, PostgreSQL, SMTP and the pod runner.

Nothing here ships in an image. These modules start the real components the
tests and the demo run against (a Kubernetes control plane built from source,
Debian's PostgreSQL, an SMTP server) on loopback, and stop exactly what they
started.
"""
