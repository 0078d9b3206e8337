"""hilkit rigs as labgrid places: ``hilkit hil --place NAME|tag:KEY`` (docs/lab.md).

Resources kept apart from what drives them, as labgrid does:

- ``place``: pure -- places, selectors (a name or ``tag:KEY[=VALUE],...``), claiming a
  place through a coordinator (reserve, wait, lock), the one-line errors;
- ``coordinator``: the only module that imports labgrid (its client session);
- ``remote``: the rig host over SSH: run ``hilkit hil --rig`` there, stream its output,
  bring the report home;
- ``run``: ``hilkit hil --place`` end to end; the place is always unlocked.

labgrid is the ``[lab]`` extra: hilkit without it runs every rig locally.
"""
