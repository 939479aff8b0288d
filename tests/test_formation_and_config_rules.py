"""Formation and config vars refused over the API in Heroku's error shape: process types the
slug does not declare (also before any deploy), bad quantities and sizes, and config values an
environment cannot hold (NUL). Nothing refused reaches the ledger."""

from __future__ import annotations

from uuid import UUID

import pytest

from tests.deploys import deploy
from tests.test_api import Api, error_of
from waka.bootstrap import Platform


@pytest.fixture
def api(platform: Platform) -> Api:
    return Api(platform)


def create(api: Api, name: str = "shop", process_types: dict[str, str] | None = None) -> str:
    app_id = api.post("/apps", json={"name": name}).json()["id"]
    if process_types is not None:
        user = api.get("/account").json()
        actor = {"id": user["id"], "email": user["email"]}
        deploy(api.platform.ledger, actor, UUID(app_id), process_types)
        api.platform.projector.catch_up()
    return app_id


def formation(api: Api, app: str = "shop") -> list[tuple[str, int, str]]:
    rows = api.get(f"/apps/{app}/formation").json()
    return sorted((f["type"], f["quantity"], f["size"]) for f in rows)


def test_an_app_never_deployed_has_no_process_type_to_scale(api: Api) -> None:
    create(api)
    for response in (
        api.patch("/apps/shop/formation", json={"updates": [{"type": "web", "quantity": 1}]}),
        api.patch("/apps/shop/formation/web", json={"quantity": 1, "size": "eco"}),
        api.patch("/apps/shop/formation/web", json={"size": "eco"}),
    ):
        assert error_of(response) == (404, "not_found", "Couldn't find that process type (web).")
    assert formation(api) == []
    assert len(api.get("/apps/shop/releases").json()) == 1


def test_only_the_slugs_process_types_can_be_scaled(api: Api) -> None:
    create(api, process_types={"web": "python app.py", "worker": "python work.py"})
    assert formation(api) == [("web", 1, "Standard-1X"), ("worker", 0, "Standard-1X")]
    # A batch with one unknown type changes nothing.
    batch = api.patch(
        "/apps/shop/formation",
        json={"updates": [{"type": "worker", "quantity": 2}, {"type": "clock", "quantity": 1}]},
    )
    assert error_of(batch) == (404, "not_found", "Couldn't find that process type (clock).")
    one = api.patch("/apps/shop/formation/clock", json={"quantity": 1})
    assert error_of(one)[:2] == (404, "not_found")
    assert formation(api) == [("web", 1, "Standard-1X"), ("worker", 0, "Standard-1X")]

    scaled = api.patch("/apps/shop/formation/worker", json={"quantity": 2, "size": "eco"})
    assert scaled.status_code == 200
    assert (scaled.json()["quantity"], scaled.json()["size"]) == (2, "Eco")


@pytest.mark.parametrize(
    ("update", "words"),
    [
        ({"type": "web", "quantity": -1}, "between 0"),
        ({"type": "web", "quantity": "two"}, "Invalid quantity"),
        ({"type": "web", "size": "huge"}, "dyno size"),
        ({"type": "web"}, "Give a quantity or a size"),
    ],
)
def test_bad_quantities_and_sizes_are_invalid(api: Api, update: dict, words: str) -> None:
    create(api, process_types={"web": "python app.py"})
    response = api.patch("/apps/shop/formation", json={"updates": [update]})
    status, error_id, message = error_of(response)
    assert (status, error_id) == (422, "invalid_params")
    assert words in message
    assert formation(api) == [("web", 1, "Standard-1X")]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"TOKEN": "abc\u0000def"}, "NUL character"),
        ({"OK": "fine", "TOKEN": "\u0000"}, "config var TOKEN"),
        ({"BAD\u0000NAME": "x"}, "Invalid config var name"),
        ({"BAD=NAME": "x"}, "Invalid config var name"),
    ],
)
def test_config_an_environment_cannot_hold_is_refused(api: Api, body: dict, words: str) -> None:
    create(api)
    api.patch("/apps/shop/config-vars", json={"KEEP": "me"})  # v2
    response = api.patch("/apps/shop/config-vars", json=body)
    status, error_id, message = error_of(response)
    assert (status, error_id) == (422, "invalid_params")
    assert words in message
    assert "Traceback" not in response.text
    # Refused whole: no release, nothing set.
    assert api.get("/apps/shop/config-vars").json() == {"KEEP": "me"}
    assert len(api.get("/apps/shop/releases").json()) == 2


def test_other_control_characters_and_unicode_are_kept(api: Api) -> None:
    create(api)
    value = "line one\nline two\ttab \u00e9\U0001f600"
    assert api.patch("/apps/shop/config-vars", json={"TEXT": value}).status_code == 200
    assert api.get("/apps/shop/config-vars").json() == {"TEXT": value}
