"""The deliver pump: ``sfamp.changes.*`` → transform → coalesce → Amplitude, on the cadence.

``pump`` runs the loop, the flush and the commits; ``window`` is what it holds
between flushes; ``lookups`` the Salesforce reads a flush makes.
"""

from pipeline.runtime.deliver.pump import Clock, DeliverPump

__all__ = ["Clock", "DeliverPump"]
