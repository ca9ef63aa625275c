"""`sagaline contracts check`: breaking changes without a schema_version bump fail, one line each.

The pure comparison is exercised with model variants (what a developer would change in
contracts/); the command with a published directory that differs from the code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

import pytest
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from contracts.base import Event, ShortText
from contracts.compat import compare
from contracts.schema_export import message_schema
from sagaline_tools.cli import app
from sagaline_tools.cli.contracts import default_dir

# --- the comparison, on model variants -----------------------------------------------------------


class Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    sku: ShortText
    quantity: Annotated[int, Field(ge=1, le=100)]


class Parcel(Event):
    message_type: ClassVar[str] = "Parcel"
    parcel_id: ShortText
    weight_grams: Annotated[int, Field(ge=0, le=30_000)]
    note: str | None = None
    speed: Literal["standard", "express"] = "standard"
    lines: Annotated[tuple[Line, ...], Field(max_length=10)]
    volume: float


def changes(variant: type[Event]) -> list[str]:
    published = {"Parcel": message_schema(Parcel)}
    return [p.line() for p in compare(published, {"Parcel": message_schema(variant)})]


UNCHANGED = " (schema_version 1 unchanged)"


def test_the_same_schema_is_compatible() -> None:
    assert changes(Parcel) == []


def test_an_added_optional_field_is_compatible() -> None:
    class Added(Parcel):
        message_type: ClassVar[str] = "Parcel"
        insured: bool = False
        label: ShortText | None = None

    assert changes(Added) == []


def test_widening_is_compatible() -> None:
    class Wider(Event):
        message_type: ClassVar[str] = "Parcel"
        parcel_id: Annotated[str, Field(min_length=1, max_length=400)]
        weight_grams: Annotated[int, Field(ge=0, le=60_000)] | None
        note: str | None = None
        speed: Literal["standard", "express", "overnight"] = "standard"
        lines: Annotated[tuple[Line, ...], Field(max_length=20)]
        volume: float

    assert changes(Wider) == []


def test_a_removed_field_breaks() -> None:
    class Removed(Event):
        message_type: ClassVar[str] = "Parcel"
        parcel_id: ShortText
        weight_grams: Annotated[int, Field(ge=0, le=30_000)]
        speed: Literal["standard", "express"] = "standard"
        lines: Annotated[tuple[Line, ...], Field(max_length=10)]
        volume: float

    assert changes(Removed) == [f"Parcel: payload.note: field removed{UNCHANGED}"]


def test_a_renamed_field_breaks_twice() -> None:
    class Renamed(Event):
        message_type: ClassVar[str] = "Parcel"
        parcel_ref: ShortText
        weight_grams: Annotated[int, Field(ge=0, le=30_000)]
        note: str | None = None
        speed: Literal["standard", "express"] = "standard"
        lines: Annotated[tuple[Line, ...], Field(max_length=10)]
        volume: float

    assert changes(Renamed) == [
        f"Parcel: payload.parcel_id: field removed{UNCHANGED}",
        f"Parcel: payload.parcel_ref: new required field{UNCHANGED}",
    ]


def test_newly_required_fields_break() -> None:
    class Required(Parcel):
        message_type: ClassVar[str] = "Parcel"
        note: str | None
        customs_code: ShortText

    assert changes(Required) == [
        f"Parcel: payload.note: field now required{UNCHANGED}",
        f"Parcel: payload.customs_code: new required field{UNCHANGED}",
    ]


def test_narrowed_types_and_ranges_break() -> None:
    class Line2(Line):
        quantity: Annotated[int, Field(ge=1, le=50)]

    class Narrow(Event):
        message_type: ClassVar[str] = "Parcel"
        parcel_id: Annotated[str, Field(min_length=3, max_length=200)]
        weight_grams: Annotated[int, Field(ge=1, le=30_000)]
        note: str = ""
        speed: Literal["standard"] = "standard"
        lines: Annotated[tuple[Line2, ...], Field(max_length=10)]
        volume: int

    assert changes(Narrow) == [
        f"Parcel: payload.parcel_id: minLength raised from 1 to 3{UNCHANGED}",
        f"Parcel: payload.weight_grams: minimum raised from 0 to 1{UNCHANGED}",
        f"Parcel: payload.note: no longer accepts null{UNCHANGED}",
        f"Parcel: payload.speed: no longer accepts 'express'{UNCHANGED}",
        f"Parcel: payload.lines[].quantity: maximum lowered from 100 to 50{UNCHANGED}",
        f"Parcel: payload.volume: no longer accepts number{UNCHANGED}",
    ]


def test_unknown_fields_forbidden_or_a_new_pattern_break() -> None:
    class Open(Parcel):
        message_type: ClassVar[str] = "Parcel"
        model_config = ConfigDict(extra="allow")

    class Patterned(Parcel):
        message_type: ClassVar[str] = "Parcel"
        parcel_id: Annotated[str, Field(pattern=r"^P\d+$")]

    published = {"Parcel": message_schema(Open)}
    assert [p.line() for p in compare(published, {"Parcel": message_schema(Parcel)})] == [
        f"Parcel: payload: no longer accepts unknown fields{UNCHANGED}"
    ]
    pattern = repr(r"^P\d+$")
    assert changes(Patterned) == [
        f"Parcel: payload.parcel_id: pattern changed from none to {pattern}{UNCHANGED}"
    ]


def test_a_removed_message_breaks() -> None:
    published = {"Parcel": message_schema(Parcel)}
    assert [p.line() for p in compare(published, {})] == ["Parcel: message removed"]


def test_a_schema_version_bump_declares_the_break() -> None:
    class Bumped(Event):
        message_type: ClassVar[str] = "Parcel"
        schema_version: ClassVar[int] = 2
        parcel_id: ShortText

    assert changes(Bumped) == []
    published = {"Parcel": message_schema(Bumped)}
    lowered = compare(published, {"Parcel": message_schema(Parcel)})
    assert [p.line() for p in lowered] == ["Parcel: schema_version lowered from 2 to 1"]


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """A copy of the checked-in schemas, to play the contract as it was published."""
    directory = tmp_path / "published"
    shutil.copytree(default_dir(), directory)
    return directory


def edit(directory: Path, name: str, change: Callable[[dict[str, Any]], object]) -> None:
    path = directory / f"{name}.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def payload(document: dict[str, Any], name: str) -> dict[str, Any]:
    return cast(dict[str, Any], document["$defs"][name])


def test_check_passes_on_the_checked_in_schemas() -> None:
    result = CliRunner().invoke(app, ["contracts", "check"])
    assert result.exit_code == 0, result.stderr
    assert "compatible: 73 published schemas" in result.stdout


def test_check_fails_with_one_line_per_breaking_change(published: Path) -> None:
    # What the code does now, against what was published before: it dropped gift_wrap, made
    # card_token required, lowered the quantity limit and no longer has OrderGiftWrapped.
    edit(
        published,
        "OrderSubmitted",
        lambda d: payload(d, "OrderSubmitted")["properties"].update(gift_wrap={"type": "boolean"}),
    )
    edit(
        published,
        "OrderSubmitted",
        lambda d: payload(d, "OrderSubmitted")["required"].remove("card_token"),
    )
    edit(
        published,
        "OrderSubmitted",
        lambda d: payload(d, "OrderLine")["properties"]["quantity"].update(maximum=20_000),
    )
    shutil.copy(published / "OrderCompleted.json", published / "OrderGiftWrapped.json")

    result = CliRunner().invoke(app, ["contracts", "check", "--against", str(published)])

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: OrderGiftWrapped: message removed",
        f"error: OrderSubmitted: payload.lines[].quantity: maximum lowered from 20000 to 10000"
        f"{UNCHANGED}",
        f"error: OrderSubmitted: payload.gift_wrap: field removed{UNCHANGED}",
        f"error: OrderSubmitted: payload.card_token: field now required{UNCHANGED}",
    ]
    assert result.stdout == ""


def test_check_passes_when_the_code_added_an_optional_field(published: Path) -> None:
    # Published before `comment` existed: the code's new optional field is compatible.
    def drop_comment(document: dict[str, object]) -> None:
        del payload(document, "ApprovalGranted")["properties"]["comment"]

    edit(published, "ApprovalGranted", drop_comment)
    runner = CliRunner()
    result = runner.invoke(app, ["contracts", "check", "--against", str(published)])
    assert result.exit_code == 0, result.stderr
    assert "compatible" in result.stdout
    assert "not what the code exports" in result.stderr  # a reminder, not a failure

    result = runner.invoke(app, ["contracts", "check", "--against", str(published), "--json"])
    assert json.loads(result.stdout) == {"compatible": True, "problems": [], "checked": 73}


def test_check_json_lists_the_problems(published: Path) -> None:
    (published / "PaymentFailed.json").rename(published / "PaymentDeclined.json")
    result = CliRunner().invoke(app, ["contracts", "check", "--against", str(published), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["problems"] == ["PaymentDeclined: message removed"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_a_broken_published_file_is_one_line(published: Path, content: str) -> None:
    (published / "OrderSubmitted.json").write_text(content)
    result = CliRunner().invoke(app, ["contracts", "check", "--against", str(published)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "OrderSubmitted.json" in lines[0]


def test_an_empty_or_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["contracts", "check", "--against", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "no published schemas" in result.stderr
