"""The application role derived from the owner's URL (pure: no database)."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from infra.db import app_database_url, app_role_name, derived_password, same_role, store_env


def test_the_app_role_is_named_after_the_database_and_keyed_by_the_owner() -> None:
    owner = "postgresql://aiorch:s3cret@db.internal:5433/aiorch"
    app = make_url(app_database_url(owner))
    assert (app.username, app.host, app.port, app.database) == ("aiorch_app", "db.internal", 5433, "aiorch")
    assert app.password == derived_password(owner, "aiorch_app") and len(str(app.password)) == 64
    assert derived_password("postgresql://aiorch:other@db.internal:5433/aiorch", "aiorch_app") != app.password
    assert not same_role(owner, str(app.render_as_string(hide_password=False)))
    assert app_role_name("postgresql://u@h/" + "d" * 70) == ("d" * 70 + "_app")[:63]


def test_a_passwordless_owner_gives_a_passwordless_role_and_a_configured_url_wins() -> None:
    owner = "postgresql://postgres:@/aiorch?host=/tmp/pg"
    app = make_url(app_database_url(owner))
    assert app.username == "aiorch_app" and not app.password and app.query["host"] == "/tmp/pg"
    assert app_database_url(owner, "postgresql://mine:pw@h/aiorch") == "postgresql://mine:pw@h/aiorch"
    assert store_env(owner, create_table=False)["CREATE_TABLE"] == "n"
