"""The scheduled reconcile: re-read what change events cannot keep fresh, send what differs.

- ``schedule``: when the next run is due (pure);
- ``digest``: which properties are reconciled, and the digest of what was sent (pure);
- ``recorder``: every sending path records what Amplitude accepted in ``sfamp.sent``;
- ``compare``: one read record against the digests, as a change envelope (pure);
- ``checkpoint``: the backfill's checkpoint file, one entry per object;
- ``run``: :func:`~pipeline.runtime.reconcile.run.run_reconcile`, used by
  ``sfamp reconcile`` and by ``scheduler``, the service's task.

Modules are imported by their full names (the deliver pump imports ``recorder``
alone), so this package imports nothing itself.
"""
