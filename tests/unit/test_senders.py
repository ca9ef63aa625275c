"""Who may send what (sagaline/messaging/senders.py): the policy's decisions, the settings that
configure it, and the deployment's values (docker-compose.yml) agreeing with the generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from consumers.registry import WORKERS
from contracts.topology import ParkReason
from sagaline.messaging.senders import SenderPolicy
from sagaline.settings import Settings
from tests.deploy_files import make_definitions

ROOT = Path(__file__).resolve().parents[2]

ONLY_ORCHESTRATOR = SenderPolicy(allowed=frozenset({"shop-orchestrator"}), own_user="shop-payments")


def test_an_open_policy_takes_everything() -> None:
    assert SenderPolicy().refusal("ProcessPayment", None) is None
    assert SenderPolicy(own_user="me").refusal("ProcessPayment", "anyone") is None


@pytest.mark.parametrize("sender", ["shop-orchestrator", "shop-payments"])
def test_listed_senders_and_the_consumer_itself_are_taken(sender: str) -> None:
    assert ONLY_ORCHESTRATOR.refusal("ProcessPayment", sender) is None


@pytest.mark.parametrize("sender", [None, "shop-inventory", "admin", "", "shop-orchestrator "])
def test_anyone_else_is_refused_with_the_reason_and_the_sender(sender: str | None) -> None:
    refusal = ONLY_ORCHESTRATOR.refusal("ProcessPayment", sender)
    assert refusal is not None
    assert refusal.reason is ParkReason.UNAUTHORIZED_SENDER
    assert "ProcessPayment" in refusal.summary
    assert ("no user_id" if sender is None else repr(sender)) in refusal.summary


def test_a_missing_own_user_is_not_a_wildcard() -> None:
    policy = SenderPolicy(allowed=frozenset({"orch"}), own_user=None)
    assert policy.refusal("ProcessPayment", None) is not None


def test_guarded_types_limit_the_policy_to_replies() -> None:
    policy = SenderPolicy(
        allowed=frozenset({"shop-payments"}),
        own_user="shop-orchestrator",
        guarded_types=frozenset({"PaymentProcessed"}),
    )
    assert policy.refusal("OrderSubmitted", "any-service") is None  # a domain event: anyone
    assert policy.refusal("PaymentProcessed", "shop-payments") is None
    refused = policy.refusal("PaymentProcessed", "any-service")
    assert refused is not None and refused.reason is ParkReason.UNAUTHORIZED_SENDER


def test_a_long_forged_user_is_cut_in_the_summary() -> None:
    refusal = ONLY_ORCHESTRATOR.refusal("ProcessPayment", "x" * 500)
    assert refusal is not None and len(refusal.summary) < 200


def test_settings_split_the_lists_and_read_the_broker_user() -> None:
    settings = Settings(
        command_senders=" shop-orchestrator, shop-operator ,",
        reply_senders="",
        amqp_url="amqp://shop%2Dpayments:secret@rabbit:5672/shop",
    )
    assert settings.command_senders == {"shop-orchestrator", "shop-operator"}
    assert settings.reply_senders == frozenset()
    assert settings.broker_user == "shop-payments"


@pytest.mark.parametrize(
    ("url", "user"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "guest"),
        ("amqps://rabbit.example:5671/", None),  # EXTERNAL authentication: no user in the URL
        ("amqp://a:pw@node1/,amqp://a:pw@node2/", "a"),
        ("not a url", None),
    ],
)
def test_broker_user_from_the_url(url: str, user: str | None) -> None:
    assert Settings(amqp_url=url).broker_user == user


def test_compose_sets_the_sender_lists_the_generator_gives() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-sagaline-env"]
    expected = make_definitions().sender_settings("sagaline", list(WORKERS))
    for name, value in expected.items():
        configured = env[name].replace("${SAGALINE_NAMESPACE:-sagaline}", "sagaline")
        assert set(configured.split(",")) == set(value.split(",")), name
    # Every service that runs a sagaline process gets them (through the shared anchor).
    for service in ("orchestrator", *WORKERS):
        service_env = compose["services"][service]["environment"]
        assert "SAGALINE_COMMAND_SENDERS" in service_env, service
