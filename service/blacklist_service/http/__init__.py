"""The HTTP edge: what a request meets, from the WSGI call to the answer.

In front of Flask, :mod:`.guard` refuses banned clients (the client address
from :mod:`.client_address`) and :class:`.square.SquareFastPath` answers the
plain ``GET /?n=x`` without a request context. Behind it, one blueprint per
concern: :mod:`.square` (parsing in :mod:`.squares`), :mod:`.blacklisted` and
:mod:`.health` (docs/architecture.md; docs/service.md).
"""
