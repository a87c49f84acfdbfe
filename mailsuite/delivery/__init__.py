"""Delivery of accepted messages: the dispatcher behind the hand-off (fast path or
queue) and local delivery into the store, written once (see :mod:`.local`)."""
