"""Studio routes over HTTP (Starlette's TestClient, the real app and guard): access control,
the catalogue, the schema-generated form, preview and plan, secrets, errors as the CLI's line."""

from __future__ import annotations

import html
import json
import re
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from xnodectl import catalog, process
from xnodectl.cli import app as cli
from xnodectl.studio import access, services
from xnodectl.studio.app import ROUTES, create

BASE = "http://127.0.0.1:8370"
TOKEN = "test-token-" + "x" * 20


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "ws"), "template=ethereum-node"])
    assert result.exit_code == 0, result.stderr
    return Path(result.stdout.strip())


@pytest.fixture
def client(ws: Path) -> Iterator[TestClient]:
    keys = access.Keys.new("127.0.0.1", 8370, TOKEN)
    with TestClient(create(services.Workspace(ws), keys), base_url=BASE) as c:
        c.get(f"/?token={TOKEN}", follow_redirects=False)
        yield c


def csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/").text)
    assert match
    return match.group(1)


# --- access ------------------------------------------------------------------------------------


def test_token_becomes_an_httponly_cookie_and_leaves_the_url(ws: Path) -> None:
    keys = access.Keys.new("127.0.0.1", 8370, TOKEN)
    with TestClient(create(services.Workspace(ws), keys), base_url=BASE) as c:
        assert c.get("/").status_code == 403
        wrong = c.get("/?token=nope", follow_redirects=False)
        assert wrong.status_code == 403 and "wrong studio token" in wrong.json()["error"]
        entered = c.get(f"/templates/ipfs?token={TOKEN}&x=1", follow_redirects=False)
        assert entered.status_code == 303
        assert entered.headers["location"] == "/templates/ipfs?x=1"
        cookie = entered.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        assert c.get("/").status_code == 200


@pytest.mark.parametrize("host", ["evil.example:8370", "127.0.0.1:9999", "", "localhost.evil:8370"])
def test_host_header_is_checked_against_dns_rebinding(client: TestClient, host: str) -> None:
    response = client.get("/", headers={"host": host})
    assert response.status_code == 421
    assert response.json()["error"].startswith("error: this studio does not answer to host")


def test_loopback_names_are_accepted(client: TestClient) -> None:
    assert client.get("/", headers={"host": "localhost:8370"}).status_code == 200


POSTS = [
    r.path.replace("{name}", "ipfs").replace("{id}", "x")
    for r in ROUTES
    if isinstance(r, Route) and "POST" in (r.methods or ())
]


def test_every_state_changing_route_is_listed() -> None:
    """A new POST route is added here on purpose, so the CSRF test below covers it knowingly."""
    assert sorted(POSTS) == sorted(
        ["/templates/ipfs", "/api/templates/ipfs/preview", "/nodes/add", "/nodes/ipfs/rollback",
         "/nodes/claim", "/api/claims", "/api/claims/x",
         "/deploys", "/deploys/x/cancel", *[p for p in POSTS if p.startswith(("/images", "/auth"))]]
    )  # fmt: skip
    assert len(POSTS) == 11


@pytest.mark.parametrize("path", POSTS)
def test_every_post_needs_the_csrf_token(client: TestClient, ws: Path, path: str) -> None:
    before = (ws / "inventory.toml").read_text()
    for headers, body in [({}, {}), ({"x-csrf-token": "0" * 64}, {}), ({}, {"csrf": "bad"})]:
        response = client.post(path, headers=headers, data=body)
        assert response.status_code == 403, path
        assert "CSRF" in response.json()["error"]
    assert (ws / "inventory.toml").read_text() == before
    assert not (ws / "secrets" / "ipfs").exists()


def test_session_cookie_from_another_studio_is_refused(ws: Path) -> None:
    other = access.Keys.new("127.0.0.1", 8370, "another-token-" + "y" * 20)
    keys = access.Keys.new("127.0.0.1", 8370, TOKEN)
    with TestClient(create(services.Workspace(ws), keys), base_url=BASE) as c:
        c.cookies.set(access.COOKIE, other.session)
        assert c.get("/").status_code == 403


# --- catalogue and form ------------------------------------------------------------------------


def test_catalogue_has_a_card_per_template(client: TestClient) -> None:
    page = client.get("/").text
    names = [t.name for t in catalog.all_templates()]
    assert page.count('class="card"') == len(names) == 10
    for name in names:
        assert f'href="/templates/{name}"' in page


def test_form_is_generated_from_the_json_schema(client: TestClient) -> None:
    page = client.get("/templates/ipfs").text
    schema = catalog.json_schema(catalog.get("ipfs"))
    for name in schema["properties"]:
        assert f'<label for="f-{name}"' in page or f'class="switch" for="f-{name}"' in page
    assert re.search(r'<select id="f-profile".*?value="server".*?value="lowpower"', page, re.S)
    assert 'role="switch" id="f-expose"' in page
    assert re.search(r'type="number"[^>]*id="f-swarm_port"[^>]*min="1"[^>]*max="65535"', page)
    pg = client.get("/templates/postgres").text
    assert re.search(r'type="password" id="f-password"[^>]*autocomplete="new-password"', pg)


def test_preview_errors_are_the_clis_lines(client: TestClient) -> None:
    token = csrf(client)
    body = {
        "storage_max": "lots",
        "swarm_port": "99999",
        "profile": "server",
        "gateway_fetch": "on",
    }
    out = client.post(
        "/api/templates/ipfs/preview", data=body, headers={"x-csrf-token": token}
    ).json()
    assert out["fields"]["swarm_port"] == cli_error("render", "template=ipfs", "swarm_port=99999")
    assert out["fields"]["storage_max"] == cli_error("render", "template=ipfs", "storage_max=lots")
    assert out["error"].startswith("error: parameter ")
    assert "Traceback" not in json.dumps(out)


def test_preview_renders_what_render_renders(client: TestClient) -> None:
    token = csrf(client)
    body = {"storage_max": "100GB", "profile": "lowpower", "gateway_fetch": "on"}
    out = client.post(
        "/api/templates/ipfs/preview", data=body, headers={"x-csrf-token": token}
    ).json()
    assert out["fields"] == {} and out["error"] is None
    expected = services.render(["template=ipfs", "storage_max=100GB", "profile=lowpower"]).source
    assert out["command"] == "xnodectl render -o - template=ipfs storage_max=100GB profile=lowpower"
    assert "storage_max=&#34;100GB&#34;" in out["html"]
    assert len(out["html"]) > len(expected) // 2


def test_plan_from_the_form_changes_nothing(client: TestClient, ws: Path) -> None:
    before = (ws / "inventory.toml").read_text()
    page = client.post(
        "/templates/ipfs",
        data={"csrf": csrf(client), "action": "plan", "profile": "server", "gateway_fetch": "on"},
    )
    assert page.status_code == 200
    assert 'id="plan"' in page.text and "node local" in page.text
    assert "app <strong>ipfs</strong> (ipfs): new module" in page.text
    assert "Unknown node" in page.text  # the README workspace's node is not there: said, with why
    assert (ws / "inventory.toml").read_text() == before
    assert not (ws / "apps" / "local" / "ipfs.nix").exists()


def test_secret_is_written_0600_and_never_sent_back(client: TestClient, ws: Path) -> None:
    value = "s3cret-value-that-must-not-come-back"
    token = csrf(client)
    page = client.post(
        "/templates/postgres",
        data={"csrf": token, "action": "preview", "password": value, "databases": "app"},
    )
    assert page.status_code == 200
    file = ws / "secrets" / "postgres" / "password"
    assert file.read_text() == value
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert value not in page.text and 'id="secret-password"' in page.text
    again = client.get("/templates/postgres").text
    assert value not in again and "stored" in again
    preview = client.post(
        "/api/templates/postgres/preview",
        data={"password": value},
        headers={"x-csrf-token": token},
    )
    assert value not in preview.text


def test_secret_param_cannot_escape_the_secrets_dir(tmp_path: Path) -> None:
    from xnodectl.deploy import secrets

    for app, param in [("../x", "p"), ("a", "../../etc"), ("a", "p/q"), ("", "p")]:
        with pytest.raises(services.UsageError):
            secrets.store(tmp_path, app, param, b"v")
    assert list(tmp_path.iterdir()) == []


# --- errors ------------------------------------------------------------------------------------


def test_unknown_template_is_the_clis_line(client: TestClient) -> None:
    line = cli_error("templates", "show", "ipfz")
    page = client.get("/templates/ipfz")
    assert page.status_code == 400 and line.replace("'", "&#39;") in page.text
    api = client.post("/api/templates/ipfz/preview", headers={"x-csrf-token": csrf(client)})
    assert api.status_code == 400 and api.json() == {"error": line}


def test_unknown_node_and_bad_numbers(client: TestClient) -> None:
    assert "no node named &#39;nope&#39;" in client.get("/nodes/nope").text
    token = csrf(client)
    bad = client.post(
        "/nodes/local/rollback",
        data={"to": "x1"},
        headers={"x-csrf-token": token, "accept": "application/json"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("error: generation 'x1' is not a number")
    bad = client.post(
        "/deploys",
        data={"canary": "-1"},
        headers={"x-csrf-token": token, "accept": "application/json"},
    )
    assert bad.json()["error"] == "error: canary '-1' is not a whole number (hint: use 0 or more)"
    missing = client.get("/deploys/nope", headers={"accept": "application/json"})
    assert missing.status_code == 400 and "no deploy 'nope'" in missing.json()["error"]


def test_internal_error_is_one_line_without_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "templates", boom)
    with TestClient(client.app, base_url=BASE, raise_server_exceptions=False) as c:
        c.cookies = client.cookies
        page = c.get("/", headers={"accept": "application/json"})
    assert page.status_code == 500
    assert page.json()["error"].startswith("error: internal error: RuntimeError: disk on fire")
    assert "Traceback" not in page.text


def test_static_files_and_security_headers(client: TestClient) -> None:
    page = client.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "http://" not in re.sub(r"https?://json-schema.org\S*", "", page.text)  # no CDN
    assert client.get("/static/studio.js").status_code == 200
    assert client.get("/static/studio.css").status_code == 200


# --- the command -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:0", "error: listening on 0.0.0.0 needs the name browsers will use"),
        ("192.0.2.2:0", "error: listening beyond loopback needs the workspace owner's wallet"),
        ("127.0.0.1:x", "error: --listen '127.0.0.1:x' has no valid port"),
    ],
)
def test_studio_command_bad_listen(
    ws: Path, listen: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-wallet"))
    result = CliRunner().invoke(cli, ["studio", "-w", str(ws), "--listen", listen])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(expected)
    assert "Traceback" not in result.output


def test_studio_help_imports_no_web_stack() -> None:
    probe = (
        "import json, sys\nfrom xnodectl.cli import main\n"
        "try:\n    main(['studio', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = process.run([sys.executable, "-c", probe])
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not loaded & {"starlette", "uvicorn", "jinja2", "anyio", "xnodectl.studio"}


JOURNALED = """
import sys, time
from pathlib import Path
from xnodectl.deploy.events import Event, Phase, Status
from xnodectl.deploy.journal import Journal
j = Journal(Path(sys.argv[1]), "20990101T000000-abcdef", ["local"])
j(Event("local", Phase.PREFLIGHT, Status.START, 0.1))
time.sleep(0.5)
j(Event("local", Phase.PREFLIGHT, Status.FAILED, 0.6, message="node unreachable"))
j.end({"type": "report", "ok": False, "interrupted": False, "seconds": 0.6, "failed": 1,
       "total": 1, "nodes": [{"node": "local", "outcome": "failed", "error": "unreachable"}]}, 4)
j.close()
"""


def test_a_deploy_journaled_elsewhere_shows_up(client: TestClient, ws: Path) -> None:
    """A deploy this studio did not start (its journal written by the engine's Journal in
    another process, as a terminal's `xnodectl deploy` does) is followed live."""
    runs = client.app.app.state.studio.runs  # type: ignore[attr-defined]
    process.run([sys.executable, "-c", JOURNALED, str(ws)])
    deadline = time.monotonic() + 10
    while "20990101T000000-abcdef" not in runs.runs or not runs.runs["20990101T000000-abcdef"].done:
        assert time.monotonic() < deadline, "the journaled run was not followed"
        time.sleep(0.05)
    run = runs.runs["20990101T000000-abcdef"]
    assert run.exit_code == 4 and run.nodes["local"].outcome == "failed"
    assert [e.get("status") for e in run.lines if e["type"] == "event"] == ["start", "failed"]
    page = client.get("/deploys/20990101T000000-abcdef").text
    assert "node unreachable" in page or "unreachable" in page
    assert "20990101T000000-abcdef" in client.get("/deploys").text
    assert (ws / ".xnodectl" / ".gitignore").read_text().endswith("*\n")
    tracked = process.run(["git", "-C", str(ws), "status", "--porcelain"]).stdout
    assert ".xnodectl" not in tracked


def test_deploy_button_runs_the_real_deploy_with_the_forms_words(client: TestClient) -> None:
    """The template page's Deploy is `xnodectl deploy --json template=ipfs ... --node local`;
    the README's node is not there, so the run ends with the engine's report saying so."""
    response = client.post(
        "/templates/ipfs",
        data={
            "csrf": csrf(client),
            "action": "deploy",
            "node:local": "on",
            "profile": "lowpower",
            "storage_max": "50GB",
            "gateway_fetch": "on",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    run_id = response.headers["location"].rsplit("/", 1)[1]
    run = client.app.app.state.studio.runs.runs[run_id]  # type: ignore[attr-defined]
    assert run.argv[3:5] == ["deploy", "--json"]
    assert run.argv[-2:] == ["template=ipfs", "profile=lowpower"] and "local" in run.argv
    deadline = time.monotonic() + 120
    while not run.done:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page = client.get(f"/deploys/{run_id}").text
    if nix_too_old():
        # Nix here cannot evaluate the pinned nixpkgs: the CLI's one-line error, exit 5, shown.
        assert run.exit_code == 5 and run.error is not None and run.report is None
        assert run.error.startswith("error: nix ") and "too old" in run.error
        assert html.escape(run.error.split(" (hint")[0], quote=True) in page
    else:
        assert run.exit_code != 0 and run.report is not None
        (node,) = run.report["nodes"]
        assert node["node"] == "local" and node["outcome"] == "failed" and node["state"] == "old"
    assert "xnodectl deploy --json" in page and "template=ipfs profile=lowpower" in page


def test_report_summary_counts_outcomes_apart() -> None:
    from xnodectl.studio.deploys import summary

    report = {"deployed": 1, "failed": 1, "unreachable": 1, "skipped": 2, "total": 4,
              "seconds": 3.2, "interrupted": False}  # fmt: skip
    assert summary(report) == "1 deployed, 1 failed, 1 unreachable, 2 skipped of 4 nodes in 3.2 s"
    assert summary({"interrupted_nodes": 1, "total": 1, "seconds": 0.5, "interrupted": True}) == (
        "1 interrupted of 1 nodes in 0.5 s (interrupted)"
    )


@pytest.mark.parametrize(
    ("fields", "cli_args"),
    [
        ({"name": "Bad_Name", "host": "127.0.0.1"}, ["Bad_Name", "127.0.0.1"]),
        ({"name": "n9", "host": "-oProxyCommand=x"}, ["n9", "-oProxyCommand=x"]),
        ({"name": "n9", "host": "a b"}, ["n9", "a b"]),
    ],
)
def test_node_add_refuses_bad_input_before_any_scan(
    client: TestClient, ws: Path, fields: dict[str, str], cli_args: list[str]
) -> None:
    result = CliRunner().invoke(cli, ["node", "add", "--scan", "-w", str(ws), "--", *cli_args])
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    before = (ws / "inventory.toml").read_text()
    response = client.post(
        "/nodes/add",
        data={"action": "scan", "port": "22", "user": "root", **fields},
        headers={"x-csrf-token": csrf(client), "accept": "application/json"},
    )
    assert response.status_code == 400 and response.json() == {"error": line}
    assert (ws / "inventory.toml").read_text() == before


def test_node_add_accept_needs_a_key(client: TestClient) -> None:
    response = client.post(
        "/nodes/add",
        data={"action": "accept", "name": "n9", "host": "127.0.0.1", "port": "22"},
        headers={"x-csrf-token": csrf(client), "accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("error: no host key was accepted")


def nix_too_old() -> bool:
    from xnodectl import nix

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))

    return version(nix.installed_version()) < version(nix.MINIMUM_NIX)


def test_node_page_title_is_the_node_name_only(client: TestClient) -> None:
    """The deploy log sits in the page once, not also inside <title> (an edit once put it there)."""
    page = client.get("/nodes/local").text
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    assert title is not None and "<table" not in title.group(1) and "local" in title.group(1)
    assert page.count("<h2>Deploy audit log</h2>") == 1
