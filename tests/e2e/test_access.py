"""Collaborators end to end: three real users (the owner, a collaborator, a stranger) drive the
real Heroku CLI and push with the real git client, each with their own API key, against a real
`waka up`; the access policy answers every entry point (API, git, logs, `heroku run`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Api, WakaServer, app_repo, flat, git_url, unique_name, wait_for
from .test_heroku_cli import create_app

pytestmark = [pytest.mark.e2e]


def collaborated_apps(server: WakaServer, api_key: str) -> list[str]:
    """The names under `heroku apps`' "Collaborated Apps" table (owned apps come first)."""
    out = server.heroku("apps", api_key=api_key).stdout
    if "Collaborated Apps" not in out:
        return []
    table = out.split("Collaborated Apps", 1)[1].splitlines()
    return [line.split()[0] for line in table if "@" in line and not line.startswith(" Name")]


@pytest.mark.usefixtures("stack_image")
def test_a_collaborator_deploys_configures_scales_runs_and_reads_logs_but_does_not_manage(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = create_app(server, "shared")
    mate = f"{unique_name('mate')}@example.com"
    stranger = f"{unique_name('stranger')}@example.com"
    mate_key, stranger_key = server.create_user(mate), server.create_user(stranger)
    denied = f"You do not have access to the app {app}."

    before = server.heroku("apps:info", "-a", app, api_key=mate_key, check=False)
    assert before.returncode != 0 and denied in flat(before.stderr)

    added = server.heroku("access:add", mate, "-a", app)
    assert f"Adding {mate} access to the app {app}... done" in flat(added.stderr)
    listed = server.heroku("access", "-a", app).stdout
    rows = {line.split()[0]: line.split()[1:] for line in listed.splitlines() if "@" in line}
    assert rows[server.email][0] == "owner" and rows[mate][0] == "collaborator", listed
    assert rows[mate][1:] == ["deploy,", "operate,", "view"], listed
    assert collaborated_apps(server, mate_key) == [app]

    # The collaborator deploys with their own key.
    repo = app_repo("python-web", tmp_path / "python-web")
    pushed = repo.push(git_url(server, app, api_key=mate_key))
    assert pushed.returncode == 0, pushed.output
    assert api.current_release(app)["user"]["email"] == mate
    server.heroku("config:set", "GREETING=hi", "-a", app, api_key=mate_key)
    assert api.get(f"/apps/{app}/config-vars")["GREETING"] == "hi"
    server.heroku("ps:scale", "web=2", "-a", app, api_key=mate_key)
    wait_for(
        lambda: len([d for d in api.get(f"/apps/{app}/dynos") if d["state"] == "up"]) == 2,
        what="two web dynos up",
    )
    ran = server.heroku("run", "-x", "-a", app, "--", "printenv", "GREETING", api_key=mate_key)
    assert ran.stdout.splitlines() == ["hi"], ran
    logs = server.heroku("logs", "-n", "200", "-a", app, api_key=mate_key).stdout
    assert f"Set GREETING config vars by {mate}" in logs, logs[-2000:]
    run_line = next(line for line in logs.splitlines() if "app[api]: Starting process" in line)
    assert "printenv GREETING" in run_line and run_line.endswith(f"by user {mate}"), run_line

    # Only the owner renames, destroys, and says who has access.
    for args in (
        ("apps:destroy", "-a", app, "--confirm", app),
        ("apps:rename", f"{app}-x", "-a", app),
        ("access:add", stranger, "-a", app),
    ):
        refused = server.heroku(*args, api_key=mate_key, check=False)
        assert refused.returncode != 0 and denied in flat(refused.stderr), (args, refused)
    assert api.get(f"/apps/{app}")["name"] == app

    # A stranger can neither push nor read.
    refused_push = repo.push(git_url(server, app, api_key=stranger_key))
    assert refused_push.returncode != 0
    assert "The requested URL returned error: 403" in refused_push.output
    logs_refused = server.heroku("logs", "-a", app, api_key=stranger_key, check=False)
    assert logs_refused.returncode != 0 and denied in flat(logs_refused.stderr)

    # Revoked: the collaborator's key no longer opens the app, git included.
    removed = server.heroku("access:remove", mate, "-a", app)
    assert f"Removing {mate} access from the app {app}... done" in flat(removed.stderr)
    after = server.heroku("config", "-a", app, api_key=mate_key, check=False)
    assert after.returncode != 0 and denied in flat(after.stderr)
    repo.commit_all("after revoke")
    assert repo.push(git_url(server, app, api_key=mate_key)).returncode != 0
    assert collaborated_apps(server, mate_key) == []
    assert mate not in server.heroku("access", "-a", app).stdout

    # `waka audit --actor` answers who did what: the grants by the owner, the work by the mate.
    by_owner = [(a.app, a.action) for a in server.audit("--actor", server.email)]
    assert (app, f"Grant {mate} access (view, deploy, operate)") in by_owner
    assert (app, f"Revoke {mate}'s access") in by_owner
    by_mate = [a.action for a in server.audit("--actor", mate, "--app", app)]
    assert "Set GREETING config vars" in by_mate and "Scale web=2" in by_mate, by_mate
    assert any(a.startswith("Build ") and a.endswith(" requested") for a in by_mate), by_mate
    assert server.audit("--actor", stranger) == []  # nothing they tried reached the ledger


@pytest.mark.usefixtures("stack_image")
def test_a_team_with_an_admin_a_member_and_a_viewer(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    team = unique_name("acme")
    admin = server.email  # made the team's admin by the operator
    dev, viewer = f"{unique_name('dev')}@example.com", f"{unique_name('viewer')}@example.com"
    dev_key, viewer_key = server.create_user(dev), server.create_user(viewer)
    made = server.waka("teams:create", team, "--admin", admin)
    assert f"Created team {team}" in made.stdout

    teams = server.heroku("teams").stdout
    assert any(line.split()[:2] == [team, "admin"] for line in teams.splitlines()), teams
    server.heroku("members:add", dev, "--role", "member", "-t", team)
    server.heroku("members:add", viewer, "--role", "viewer", "-t", team)
    members = server.heroku("members", "-t", team, api_key=viewer_key).stdout
    roles = {line.split()[0]: line.split()[1] for line in members.splitlines() if "@" in line}
    assert roles == {admin: "admin", dev: "member", viewer: "viewer"}, members
    refused = server.heroku(
        "members:add", viewer, "--role", "admin", "-t", team, api_key=dev_key, check=False
    )
    assert refused.returncode != 0 and f"admin of the team {team}" in flat(refused.stderr)

    # A member makes an app in the team; everyone in the team sees it.
    app = unique_name("rocket")
    created = server.heroku("apps:create", app, "--team", team, api_key=dev_key)
    assert f"Creating {app}... done" in flat(created.stderr)
    listed = server.heroku("apps", "-t", team, api_key=viewer_key).stdout
    assert f"Apps in team {team}" in listed and app in listed.split(), listed
    assert api.get(f"/apps/{app}")["owner"]["email"] == f"{team}@herokumanager.com"
    denied = f"You do not have access to the app {app}."

    # The viewer reads but changes nothing; the member works on the unlocked app.
    assert app in server.heroku("apps:info", "-a", app, api_key=viewer_key).stdout
    no = server.heroku("config:set", "A=1", "-a", app, api_key=viewer_key, check=False)
    assert no.returncode != 0 and denied in flat(no.stderr)
    server.heroku("config:set", "A=1", "-a", app, api_key=dev_key)
    repo = app_repo("python-web", tmp_path / "python-web")
    pushed = repo.push(git_url(server, app, api_key=dev_key))
    assert pushed.returncode == 0, pushed.output
    assert api.current_release(app)["user"]["email"] == dev
    # git: the viewer may fetch (view) but not push (deploy)
    refused = repo.push(git_url(server, app, api_key=viewer_key))
    assert refused.returncode != 0 and "returned error: 403" in refused.output
    cloned = repo.run("clone", git_url(server, app, api_key=viewer_key), str(tmp_path / "seen"))
    assert (tmp_path / "seen" / "Procfile").is_file(), cloned.output
    no = server.heroku("apps:destroy", "-a", app, "--confirm", app, api_key=dev_key, check=False)
    assert no.returncode != 0 and denied in flat(no.stderr)

    # Locked, the member holds only what the admin grants them, permission by permission.
    server.heroku("apps:lock", "-a", app)
    assert "[locked]" in server.heroku("apps", "-t", team).stdout
    no = server.heroku("config:set", "A=2", "-a", app, api_key=dev_key, check=False)
    assert no.returncode != 0 and denied in flat(no.stderr)
    server.heroku("access:add", dev, "--permissions", "deploy", "-a", app)
    server.heroku("config:set", "A=2", "-a", app, api_key=dev_key)
    server.heroku("access:update", dev, "--permissions", "operate", "-a", app)
    shown = server.heroku("access", "-a", app).stdout
    dev_row = next(line for line in shown.splitlines() if dev in line)
    assert "member" in dev_row and "operate, view" in dev_row, shown
    admin_row = next(line for line in shown.splitlines() if admin in line)
    assert "admin" in admin_row and "manage" in admin_row, shown
    no = server.heroku("config:set", "A=3", "-a", app, api_key=dev_key, check=False)
    assert no.returncode != 0 and denied in flat(no.stderr)
    server.heroku("maintenance:on", "-a", app, api_key=dev_key)  # operate

    # Leave, and join again once it is unlocked.
    server.heroku("apps:leave", "-a", app, api_key=dev_key)
    assert dev not in server.heroku("access", "-a", app).stdout
    server.heroku("apps:unlock", "-a", app)
    joined = server.heroku("apps:join", "-a", app, api_key=dev_key)
    assert f"Joining {app}... done" in flat(joined.stderr)

    # Roles change and members go; the audit tells who did what in the team.
    server.heroku("members:set", viewer, "--role", "member", "-t", team)
    server.heroku("members:remove", viewer, "-t", team)
    gone = server.heroku("apps:info", "-a", app, api_key=viewer_key, check=False)
    assert gone.returncode != 0 and denied in flat(gone.stderr)
    log = [(a.actor, a.action) for a in server.audit("--team", team)]
    assert ("operator", f"Create team {team} (admin {admin})") in log, log
    assert (dev, f"Create app {app}") in log and (admin, "Lock app") in log, log
    assert (admin, f"Change {dev}'s access to view, operate") in log, log
    assert (admin, f"Remove {viewer} from the team") in log, log
    assert (dev, "Set A config vars") in log, log


def test_apps_transfer_to_a_person_who_accepts_and_into_a_team(
    server: WakaServer, api: Api
) -> None:
    app = create_app(server, "handover")
    heir = f"{unique_name('heir')}@example.com"
    heir_key = server.create_user(heir)
    offered = server.heroku("apps:transfer", heir, "-a", app)
    assert f"Initiating transfer of {app} to {heir}... email sent" in flat(offered.stderr)
    assert api.get(f"/apps/{app}")["owner"]["email"] == server.email  # not until accepted

    heirs = Api(server, heir_key)
    try:
        [pending] = heirs.get("/account/app-transfers")
        assert (pending["app"]["name"], pending["state"]) == (app, "pending")
        heirs.request(
            "PATCH",
            f"/account/app-transfers/{pending['id']}",
            expect=200,
            json={"state": "accepted"},
        )
    finally:
        heirs.close()
    info = server.heroku("apps:info", "-a", app, api_key=heir_key).stdout
    assert heir in info, info
    gone = server.heroku("apps:info", "-a", app, check=False)
    assert gone.returncode != 0 and f"You do not have access to the app {app}." in flat(gone.stderr)

    team = unique_name("movers")
    server.waka("teams:create", team, "--admin", heir)
    moved = server.heroku("apps:transfer", team, "-a", app, api_key=heir_key)
    assert f"Transferring {app} to {team}... done" in flat(moved.stderr)
    listed = server.heroku("apps", "-t", team, api_key=heir_key).stdout
    assert app in listed.split(), listed
    log = [(a.actor, a.action) for a in server.audit("--app", app)]
    assert (server.email, f"Offer the app to {heir}") in log
    assert (heir, f"Transfer the app to {heir}") in log
    assert (heir, f"Transfer the app to {team}@herokumanager.com") in log
