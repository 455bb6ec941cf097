"""The controller: the kopf wiring and the loops that drive the reconcile and the ban sync.

``handlers`` registers the ``@kopf.on.*`` functions (thin: they parse, hand work on, patch
status); ``watchers`` turn watch events of children into work; ``workers`` drain the work
queues; ``memo`` is what kopf keeps for the process; ``leadership`` elects one leader over
a Lease (``lease`` holds its pure decisions).
"""
