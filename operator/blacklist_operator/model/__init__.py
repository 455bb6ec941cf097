"""The typed, validated spec of a BlacklistService: parsed once, pure, no I/O.

``resource`` is the parsed resource (:class:`~blacklist_operator.model.resource.BlacklistService`);
``knobs`` its optional sections; ``external`` an external database and its Secret;
``fields`` the field parsers and :class:`~blacklist_operator.model.fields.SpecError`.
"""
