"""Pure transformation: change envelopes and a mapping in, group updates out.

The names along the pipeline, one per stage (each a different thing, not a synonym):

* CometD CDC message (Salesforce's ``ChangeEventHeader``; the object is its
  ``entityName``) → parsed in :mod:`pipeline.salesforce.change_events`;
* :class:`~pipeline.transform.envelope.ChangeEnvelope`: one change to one record
  (the object is ``object``, the key Kafka carries); REST and Bulk reads become full
  envelopes in :mod:`pipeline.transform.reads`;
* :class:`~pipeline.transform.apply.PropertyChanges`: what one envelope means for one
  Amplitude group, as of its commit (``set``, ``unset``, its order and record id);
* :class:`~pipeline.transform.group_update.GroupUpdate`: the newest-wins result of
  coalescing them per group (:mod:`pipeline.transform.coalesce`), order-free, what
  is sent;
* an *identification*: Amplitude's name for the Group Identify API payload one
  ``GroupUpdate`` becomes (``pipeline.amplitude``; ``EncodedUpdate`` is that payload's
  bytes, sized for request limits).

Internally the Salesforce object is ``sfdc_object`` (the mapping file's key) or
``obj`` for a local; ``object`` stays only as the envelope's field and JSON key.
"""
