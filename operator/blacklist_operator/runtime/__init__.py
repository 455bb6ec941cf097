"""What one operator process holds while it runs, shared by the controller, reconcile and ban sync.

``state`` holds the :class:`~blacklist_operator.runtime.state.Runtime` handed to every handler,
worker and reconcile (the latest instances, watched Deployments, caches); ``workqueue`` the
queues the watchers feed and the workers drain; ``config`` the settings chosen at startup;
``rollout`` the pure decision of which resource may roll onto new default images. It sits
below the reconcile and the ban sync so that both can read it without importing the
controller that fills it.
"""
