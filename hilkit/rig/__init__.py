"""Rigs: what is plugged where, and the peers at the far end of the wire."""
