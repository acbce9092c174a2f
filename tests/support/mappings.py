"""Mapping documents more than one test needs."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pipeline.config.mapping import MappingConfig


def marked_twice(document: Mapping[str, Any]) -> MappingConfig:
    """``document`` with its first mapping marking deletes and a second mapping of the same
    group type (Contact named by AccountId) marking them too: what an older version
    published before validation refused it (the format reads it, validation does not)."""
    twice = copy.deepcopy(dict(document))
    first = twice["mappings"][0]
    first["on_delete"] = "mark"
    marking = {**first, "sfdc_object": "Contact", "group_name_field": "AccountId"}
    marking["group_properties"] = [{"sfdc_field": "Email", "amplitude_property": "email"}]
    twice["mappings"].append(marking)
    return MappingConfig.model_validate(twice)
