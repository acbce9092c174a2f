"""``--object``: the objects a backfill is limited to, and the one line for one nothing maps."""

from __future__ import annotations

import pytest

from pipeline.errors import MappingError
from pipeline.runtime.backfill.run import selected_objects
from tests.backfill.conftest import mapping


def test_an_object_misspelt_is_named_with_the_mapped_one_once() -> None:
    with pytest.raises(MappingError) as refused:
        selected_objects(mapping(), ["account", "ACCOUNT", "Lead"])
    assert str(refused.value) == (
        "no mapping for account, ACCOUNT, Lead (did you mean Account?); mapped objects: Account"
    )


def test_mapped_objects_keep_their_mappings_only() -> None:
    assert selected_objects(mapping(), ["Account"]).objects == ["Account"]
    assert selected_objects(mapping(), None) == mapping()
