"""hilkit rigs as labgrid places: ``hilkit hil --place NAME|tag:KEY`` (docs/lab.md).

Resources kept apart from what drives them, as labgrid does:

- ``place``: pure -- places, selectors (a name or ``tag:KEY[=VALUE],...``), claiming a
  place through a coordinator (reserve, wait, lock), the one-line errors;
- ``coordinator``: the only module that imports labgrid (its client session, and its
  power driver on a place's ``NetworkPowerPort``);
- ``remote``: the rig host over SSH: run ``hilkit hil --rig`` there, stream its output,
  bring the report home;
- ``power``: the power channel the CI side serves and the rig host's recovery suite asks
  (stdlib only);
- ``simswitch``: the test lab's simulated power switch and the simulated board's side of it;
- ``run``: ``hilkit hil --place`` end to end; the place is always unlocked (and its power
  on again).

labgrid is the ``[lab]`` extra: hilkit without it runs every rig locally.
"""
