"""The console's rights table, passwords and error fingerprints (pure code)."""

from __future__ import annotations

import pytest

from sagaline_tools.console.keys import error_pattern, fingerprint, message_key
from sagaline_tools.console.passwords import WeakPassword, hash_password, verify_password
from sagaline_tools.console.rights import Action, Verdict, decide

EVERY = list(Action)


@pytest.mark.parametrize("action", EVERY)
def test_viewers_never_act(action: Action) -> None:
    assert decide("viewer", action).verdict is Verdict.REFUSED


@pytest.mark.parametrize("action", EVERY)
def test_admins_do_everything(action: Action) -> None:
    assert decide("admin", action, size=10_000).verdict is Verdict.ALLOWED


def test_operators_small_actions_but_not_destructive_or_bulk() -> None:
    allowed = {a for a in EVERY if decide("operator", a).verdict is Verdict.ALLOWED}
    assert allowed == set(EVERY) - {Action.ABORT, Action.PURGE, Action.MIGRATE}
    assert decide("operator", Action.REPLAY, size=100, bulk_limit=100).verdict is Verdict.ALLOWED
    bulk = decide("operator", Action.REPLAY, size=101, bulk_limit=100)
    assert (bulk.verdict, bulk.why) == (Verdict.REFUSED, "replay of 101 messages needs an admin")


def test_four_eyes_turns_refusals_into_approval_requests() -> None:
    for action in (Action.ABORT, Action.PURGE, Action.MIGRATE):
        assert decide("operator", action, four_eyes=True).verdict is Verdict.NEEDS_APPROVAL
    assert decide("viewer", Action.ABORT, four_eyes=True).verdict is Verdict.REFUSED
    assert decide("operator", Action.RETRY, four_eyes=True).verdict is Verdict.ALLOWED
    assert decide("nobody", Action.RETRY).verdict is Verdict.REFUSED


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert verify_password(first, "correct horse battery")
    assert not verify_password(first, "correct horse batterx")
    assert not verify_password("garbage", "x") and not verify_password("md5$1$2$3$4$5", "x")
    with pytest.raises(WeakPassword):
        hash_password("short")


def test_error_fingerprints_ignore_ids_and_values() -> None:
    a = "OrderNotFound: order 123 for 'anna' (6f1c2b7e-1b1d-4c1e-9b3a-2f6a5d4c3b21) missing"
    b = "OrderNotFound: order 98 for 'bob' (0a1b2c3d-1b1d-4c1e-9b3a-2f6a5d4c3b21) missing"
    assert fingerprint("retries-exhausted", a) == fingerprint("retries-exhausted", b)
    assert fingerprint("retries-exhausted", a) != fingerprint("schema-invalid", a)
    assert error_pattern("x", a) == "OrderNotFound: order <n> for <value> (<id>) missing"
    assert error_pattern("malformed-json", None) == "(malformed-json, no error text)"
    assert message_key("m-1", b"{}") == "m-1"
    assert message_key(None, b"{}").startswith("sha256:")
