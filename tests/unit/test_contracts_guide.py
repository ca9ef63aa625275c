"""README.md's "Publishing events from your service" cannot drift from the code: its envelope
examples are the generated ones (and parse), the example payload files match them, and every
message type, envelope field, property and parking reason it names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from contracts import behaviour
from contracts.envelope import Envelope
from contracts.examples import example_json
from contracts.registry import MESSAGE_TYPES
from contracts.topology import ParkReason
from sagaline.messaging.parsing import parse_body

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
STARTING = ("OrderSubmitted", "EnrollmentRequested", "DocumentChangeDetected")


def section() -> str:
    match = re.search(r"\n## Publishing events from your service\n(.*?)\n## ", README, re.S)
    assert match, "README lost its publishing guide"
    return match.group(1)


@pytest.mark.parametrize("message_type", STARTING)
def test_the_guide_shows_the_generated_envelope(message_type: str) -> None:
    match = re.search(
        rf"<!-- example:{message_type}:start -->\n```json\n(.*?)```\n"
        rf"<!-- example:{message_type}:end -->",
        section(),
        re.S,
    )
    assert match, f"README lost the {message_type} example"
    shown = match.group(1)
    assert shown == json.dumps(example_json(message_type), indent=2) + "\n", (
        "README example drifted: paste json.dumps(example_json(...), indent=2)"
    )
    envelope = parse_body(shown.encode(), "application/json", 262_144)
    assert envelope.type == message_type


@pytest.mark.parametrize("message_type", STARTING)
def test_the_example_payload_files_are_the_guide_s(message_type: str) -> None:
    path = ROOT / "examples" / "publishers" / "payloads" / f"{message_type}.json"
    assert json.loads(path.read_text()) == example_json(message_type)["payload"]


def test_every_message_type_the_guide_names_exists() -> None:
    named = set(re.findall(r"`([A-Z][a-z]+(?:[A-Z][a-z]+)+)`", section()))
    assert named >= {*STARTING, "OrderCompleted", "ApprovalGranted"}
    assert named <= set(MESSAGE_TYPES)


def test_the_envelope_and_property_tables_are_complete() -> None:
    text = section()
    fields = set(re.findall(r"^\| `([a-z_]+)` \| (?:yes|no)", text, re.M))
    assert fields == set(Envelope.model_fields)
    properties = set(re.findall(r"^\| `([a-z_]+)` \| (?!yes|no)", text, re.M))
    assert properties == set(behaviour.AMQP_PROPERTIES)


def test_the_parking_reasons_it_names_exist_and_all_are_documented() -> None:
    named = set(re.findall(r"`([a-z]+(?:-[a-z]+)+)`", section()))
    reasons = {reason.value for reason in ParkReason}
    assert {"schema-invalid", "unknown-saga", "invalid-envelope"} <= named
    assert named & reasons == named - {"x-sagaline-reason", "x-sagaline-error"}
    assert all(f"`{reason}`" in README for reason in reasons)


def test_the_cli_table_lists_the_contract_commands() -> None:
    for command in ("sagaline contracts export", "sagaline contracts check"):
        assert f"| `{command} [" in README
