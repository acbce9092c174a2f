"""Pure transformation: change records and a mapping in, group updates out."""
