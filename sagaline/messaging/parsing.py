"""Turn raw AMQP bodies into validated envelopes, or a precise reason why not.

Pure functions: no I/O, so every kind of hostile input has a unit test.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from contracts.envelope import Envelope, EnvelopeHeader, envelope_model
from contracts.registry import message_class
from contracts.storable import error_path
from contracts.topology import ParkReason
from sagaline.messaging.errors import PermanentMessageError


def is_json_content_type(content_type: str) -> bool:
    """`application/json`, optionally with a UTF-8 charset, in any spelling RFC 9110 allows."""
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if media_type != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def validation_summary(error: ValidationError, limit: int = 5) -> str:
    """Locations and error kinds only: pydantic's str(error) would quote the input values."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:limit]:
        path = [*item["loc"], *error_path(dict(item))]
        if item["type"] == "extra_forbidden" and path:
            path[-1] = "<unknown field>"  # the key itself is sender input, not our schema
        loc = ".".join(str(p) for p in path) or "<body>"
        parts.append(f"{loc}: {item['type']}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


def _is_json_syntax_error(error: ValidationError) -> bool:
    return any(item["type"] in {"json_invalid", "json_type"} for item in error.errors())


def parse_body(body: bytes, content_type: str | None, max_body_bytes: int) -> Envelope[Any]:
    """Validate a message body; raise PermanentMessageError naming what is wrong."""
    if len(body) > max_body_bytes:
        raise PermanentMessageError(
            ParkReason.OVERSIZED, f"body of {len(body)} bytes exceeds the limit of {max_body_bytes}"
        )
    if content_type is not None and not is_json_content_type(content_type):
        raise PermanentMessageError(
            ParkReason.WRONG_CONTENT_TYPE, f"content type {content_type[:60]!r} is not JSON"
        )
    try:
        header = EnvelopeHeader.model_validate_json(body)
    except ValidationError as exc:
        if _is_json_syntax_error(exc):
            raise PermanentMessageError(
                ParkReason.MALFORMED_JSON, validation_summary(exc)
            ) from None
        raise PermanentMessageError(ParkReason.INVALID_ENVELOPE, validation_summary(exc)) from None
    model = message_class(header.type)
    if model is None:
        raise PermanentMessageError(ParkReason.UNKNOWN_TYPE, f"no message type {header.type!r}")
    if header.schema_version > model.schema_version:
        raise PermanentMessageError(
            ParkReason.UNSUPPORTED_SCHEMA_VERSION,
            f"{header.type} v{header.schema_version}; this build reads"
            f" up to v{model.schema_version}",
        )
    try:
        return envelope_model(model).model_validate_json(body)
    except ValidationError as exc:
        raise PermanentMessageError(ParkReason.SCHEMA_INVALID, validation_summary(exc)) from None
