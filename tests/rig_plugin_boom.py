"""A lab package that is broken: importing it raises (a ``bus.factory`` must say so)."""

raise RuntimeError("this bridge package is broken")
