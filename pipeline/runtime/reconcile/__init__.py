"""The scheduled reconcile: re-read what change events cannot keep fresh, send what differs.

Filled in as the package grows: ``schedule`` (when), ``digest`` (what was sent).
"""
