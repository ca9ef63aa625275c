"""AMQP_URL as a list of nodes: what a list may be, the order nodes are tried in, the
single-URL path left as it was, and a bad list refused with one line that quotes no secret."""

from __future__ import annotations

import subprocess
import sys

import pytest
from faststream.rabbit import RabbitBroker
from typer.testing import CliRunner
from yarl import URL

from sagaline.amqp_nodes import Node, NodeListError, NodeRing, parse_nodes
from sagaline.messaging.nodes import NodeListConnection, broker_url, connection_class, fail_over
from sagaline.settings import Settings
from sagaline_tools.cli import app

CLUSTER = "amqp://app:s3cret@rabbit-1:5672/prod,amqp://app:s3cret@rabbit-2/prod, amqp://app:s3cret@10.0.0.3:5700/prod"


def test_a_list_names_each_node_in_order() -> None:
    urls = parse_nodes(CLUSTER)
    assert [(u.host, u.port) for u in urls] == [
        ("rabbit-1", 5672),
        ("rabbit-2", None),  # the scheme's default port, 5672
        ("10.0.0.3", 5700),
    ]
    assert Settings(amqp_url=CLUSTER).amqp_url == CLUSTER
    assert Settings(amqp_url=CLUSTER).broker_user == "app"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("amqp://app:s3cret@a/,", "entry 2 of 2 is empty (a stray comma?)"),
        ("amqp://app:s3cret@a/,,amqp://app:s3cret@b/", "entry 2 of 3 is empty"),
        ("amqp://app:s3cret@a/,http://app:s3cret@b/", "entry 2 of 2 is not an amqp:// or amqps://"),
        ("amqp://app:s3cret@a/,amqp:///prod", "entry 2 of 2 is not an amqp:// or amqps://"),
        ("amqp://app:s3cret@a/,amqps://app:s3cret@b/", "differs from entry 1 in its scheme"),
        ("amqp://app:s3cret@a/,amqp://bob:s3cret@b/", "differs from entry 1 in its user"),
        ("amqp://app:s3cret@a/,amqp://app:other@b/", "differs from entry 1 in its password"),
        ("amqp://app:s3cret@a/x,amqp://app:s3cret@b/y", "in its virtual host"),
        ("amqp://app:s3cret@a/?heartbeat=5,amqp://app:s3cret@b/", "in its query options"),
        ("amqp://app:s3cret@a/,amqp://app:s3cret@a:5672/", "entry 2 of 2 repeats a node"),
    ],
)
def test_a_bad_list_is_refused_with_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(NodeListError) as raised:
        parse_nodes(value)
    assert problem in str(raised.value)
    assert "s3cret" not in str(raised.value) and "other" not in str(raised.value)
    with pytest.raises(ValueError, match="AMQP_URL entry"):
        Settings(amqp_url=value)


def test_a_single_url_is_taken_as_it_always_was() -> None:
    single = "amqp://guest:guest@127.0.0.1:5672/"
    assert broker_url(single) == single
    broker = fail_over(RabbitBroker(single), single)
    assert "connection_class" not in broker._connection_kwargs
    # Not checked as a list is: the client library reports a bad single URL when it connects.
    assert Settings(amqp_url="not a url").amqp_url == "not a url"


def test_the_broker_of_a_list_connects_over_its_nodes() -> None:
    broker = fail_over(RabbitBroker(broker_url(CLUSTER)), CLUSTER)
    made = broker._connection_kwargs["connection_class"]
    assert issubclass(made, NodeListConnection)
    nodes = made.NODES
    assert nodes == (Node("rabbit-1", 5672), Node("rabbit-2", 5672), Node("10.0.0.3", 5700))
    assert URL(broker_url(CLUSTER)).host == "rabbit-1"


def test_the_ring_goes_in_order_then_round_and_round() -> None:
    ring = NodeRing([Node("a", 1), Node("b", 2), Node("c", 3)])
    seen = [ring.current] + [ring.advance() for _ in range(4)]
    assert [n.host for n in seen] == ["a", "b", "c", "a", "b"]


async def test_a_connection_takes_its_url_from_the_ring_and_keeps_the_rest() -> None:
    urls = parse_nodes(
        "amqps://app:s3cret@r1:5671/prod?heartbeat=5,amqps://app:s3cret@r2/prod?heartbeat=5"
    )
    connection = connection_class(urls)(urls[0])
    assert (connection.url.host, connection.url.port) == ("r1", 5671)
    connection._ring.advance()
    url = connection.url
    assert (url.scheme, url.host, url.port, url.user, url.path) == (
        "amqps",
        "r2",
        5671,
        "app",
        "/prod",
    )
    assert url.query["heartbeat"] == "5"
    assert "s3cret" not in str(connection)  # aio-pika's repr masks the password
    connection.url = connection.url.with_password("rotated")  # as aio-pika's update_secret
    assert (connection.url.host, connection.url.password) == ("r2", "rotated")


def test_a_process_refuses_a_bad_list_with_one_line() -> None:
    bad = "amqp://app:s3cret@a/,amqp://app:hunter2@b/"
    for module in (["-m", "orchestrator"], ["-m", "consumers", "payments"]):
        result = subprocess.run(
            [sys.executable, *module],
            env={"AMQP_URL": bad, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            "invalid settings: AMQP_URL entry 2 of 2 differs from entry 1 in its password:"
            " the URLs of one cluster may differ only in host and port"
        ]


def test_the_cli_refuses_a_bad_list_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://app:s3cret@a/,")
    result = CliRunner().invoke(app, ["dlq", "list"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid configuration: AMQP_URL: Value error,"
        " AMQP_URL entry 2 of 2 is empty (a stray comma?)"
    ]
