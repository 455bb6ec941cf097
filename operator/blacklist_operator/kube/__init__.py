"""Access to the Kubernetes API.

``api`` is the only module that calls the API; ``fence`` guards its writes while leading.
"""
