"""The batch's jsonb text says what json.dumps said, for every JSON-native value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.store.json_text import json_text

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_the_text_reads_back_as_json_dumps_text_does(value: Any) -> None:
    assert json.loads(json_text(value)) == json.loads(json.dumps(value))


def test_a_workflows_data_reads_back_unchanged() -> None:
    data = {"order_id": "order-ü", "lines": [{"sku": "sku-1", "quantity": 2}], "paid": None}
    assert json.loads(json_text(data)) == data
