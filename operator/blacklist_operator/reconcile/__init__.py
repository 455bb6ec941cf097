"""The reconcile of one BlacklistService's children: build them, apply them, report status.

``children`` is the one reconcile path; ``readiness`` computes the conditions from the
watched Deployments; ``rollout_gate`` lets one resource at a time roll onto new default
images; ``volumes`` and ``database_access`` handle the storage and the database Secret;
``outcome`` records what a reconcile did. It talks to the cluster only through :mod:`..kube`.
"""
