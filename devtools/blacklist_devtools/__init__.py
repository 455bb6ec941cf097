"""Development tooling: the local cluster and its real node, PostgreSQL, SMTP and the demo.

Nothing here ships in an image. These modules start the real components the
tests and the demo run against (a Kubernetes control plane and a node built
from source, the product's images run as containers, Debian's PostgreSQL, an
SMTP server) on this machine, and stop exactly what they started.
"""
