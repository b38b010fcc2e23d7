"""Studio images page: the dry run is `image build --dry-run`'s; a build is the real
`xnodectl image build --json` (here of a fixture xnodectl flake with the real nix), downloadable."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from tests.test_image import KEY_LINE, OWNER, OWNER_LOWER, fixture_flake
from tests.xnodes import NIX_CONF
from xnodectl.cli import app as cli
from xnodectl.studio import access, services
from xnodectl.studio.app import create
from xnodectl.workspace import Workspace

BASE = "http://127.0.0.1:8370"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "ws")])
    keys = access.Keys.new("127.0.0.1", 8370)
    with TestClient(
        create(services.Workspace(Path(result.stdout.strip())), keys), base_url=BASE
    ) as c:
        c.get(f"/?token={keys.token}")
        yield c


def csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/images").text)
    assert match
    return match.group(1)


def test_dry_run_is_the_clis(client: TestClient, tmp_path: Path) -> None:
    key = tmp_path / "k.pub"
    key.write_text(KEY_LINE + "\n")
    cli_out = CliRunner().invoke(
        cli,
        ["image", "build", "--owner", OWNER_LOWER, "--ssh-key", str(key), "--dry-run", "--json"],
        env={"XNODECTL_WORKSPACE": str(tmp_path / "ws")},  # the studio's workspace
    )
    expected = json.loads(cli_out.stdout)
    [trusted] = Workspace(tmp_path / "ws").load().settings.store_keys  # init made the owner key
    assert trusted in expected["files"]["identity.nix"]
    page = client.post(
        "/images",
        data={"csrf": csrf(client), "action": "dry-run", "owner": OWNER_LOWER, "ssh_key": KEY_LINE},
    ).text
    assert 'id="dry-run-result"' in page
    for text in expected["files"].values():
        assert text.replace('"', "&#34;").replace("'", "&#39;").strip() in page
    assert "xnodectl image build --owner " + OWNER_LOWER in page


@pytest.mark.parametrize(
    ("field", "value", "cli_args"),
    [
        ("owner", "0x1234", ["--owner", "0x1234"]),
        ("hostname", "Bad_Name", ["--owner", OWNER, "--hostname", "Bad_Name"]),
    ],
)
def test_bad_input_is_the_clis_line(
    client: TestClient, field: str, value: str, cli_args: list[str]
) -> None:
    result = CliRunner().invoke(cli, ["image", "build", "--dry-run", *cli_args])
    line = result.stderr.strip().splitlines()[-1]
    data = {"csrf": csrf(client), "action": "dry-run", "owner": OWNER, field: value}
    response = client.post("/images", data=data, headers={"accept": "application/json"})
    assert response.status_code == 400 and response.json() == {"error": line}
    build = client.post(
        "/images", data={**data, "action": "build"}, headers={"accept": "application/json"}
    )
    assert build.status_code == 400 and "/images/" not in build.headers.get("location", "")


def test_bad_key_is_refused(client: TestClient) -> None:
    data = {
        "csrf": csrf(client),
        "action": "dry-run",
        "owner": OWNER,
        "ssh_key": "ssh-ed25519 AAAA",
    }
    response = client.post("/images", data=data, headers={"accept": "application/json"})
    assert response.status_code == 400 and response.json()["error"].startswith("error: SSH key")


@pytest.mark.slow
def test_build_streams_progress_and_downloads(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XNODECTL_FLAKE", fixture_flake(tmp_path / "xnodectl", noisy=False))
    monkeypatch.setenv("NIX_CONFIG", NIX_CONF)
    data = {"csrf": csrf(client), "action": "build", "owner": OWNER, "ssh_key": KEY_LINE,
            "hostname": "edge-1"}  # fmt: skip
    started = client.post("/images", data=data, follow_redirects=False)
    assert started.status_code == 303
    page = started.headers["location"]
    run = client.app.app.state.builds.builds[page.rsplit("/", 1)[1]]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while not run.done and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.exit_code == 0, run.error
    [trusted] = Workspace(tmp_path / "ws").load().settings.store_keys
    assert run.argv[run.argv.index("--store-key") + 1] == trusted  # the image trusts the owner
    with client.stream("GET", page + "/events") as events:
        body = "".join(events.iter_text())
    assert "event: log" in body and "building the iso image of edge-1" in body
    assert "event: report" in body and "event: end" in body
    image = client.get(page + "/download")
    assert image.status_code == 200
    assert image.content == f"{OWNER} {KEY_LINE} iso\n".encode()
    assert run.report["image"]["sha256"] == hashlib.sha256(image.content).hexdigest()
    assert 'filename="xnodeos-edge-1.iso"' in image.headers["content-disposition"]


def test_forged_format_is_one_line(client: TestClient) -> None:
    data = {"csrf": csrf(client), "action": "dry-run", "owner": OWNER, "format": "vhd"}
    response = client.post("/images", data=data, headers={"accept": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("error: format 'vhd' is not an image format")
