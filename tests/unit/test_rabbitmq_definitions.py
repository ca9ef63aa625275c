"""deploy/rabbitmq/definitions.json is what make_definitions.py writes for this build.

The file pre-declares the whole topology and narrows each role's permissions to it: when the
contracts, retry delays or delivery limit change and nobody regenerates it, the orchestrator and
workers would be refused their own queues in docker-compose. Password hashes are salted (they
differ on every run), so users are compared by name, tags and the development password.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.deploy_files import make_definitions

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "deploy" / "rabbitmq" / "definitions.json"


generator = make_definitions


def without_hashes(document: dict[str, Any]) -> dict[str, Any]:
    users = [{k: v for k, v in u.items() if k != "password_hash"} for u in document["users"]]
    return {**document, "users": users}


def test_the_checked_in_definitions_match_the_generator_for_the_default_settings() -> None:
    make = generator()
    layout = make.layout_of_this_build("sagaline", (1000, 5000, 30000), 20)
    expected = make.definitions(layout, {})
    actual = json.loads(CHECKED_IN.read_text())
    assert without_hashes(actual) == without_hashes(expected), (
        "deploy/rabbitmq/definitions.json is out of date: regenerate it with"
        " `.venv/bin/python deploy/rabbitmq/make_definitions.py > deploy/rabbitmq/definitions.json`"
    )


def test_checked_in_users_have_only_development_passwords() -> None:
    make = generator()
    for user in json.loads(CHECKED_IN.read_text())["users"]:
        assert make.check_password(user["password_hash"], f"{user['name']}-dev"), user["name"]


def test_no_role_but_admin_may_touch_everything() -> None:
    document = json.loads(CHECKED_IN.read_text())
    wide = [p["user"] for p in document["permissions"] if ".*" in (p["read"], p["write"])]
    assert wide == ["sagaline-admin"]
