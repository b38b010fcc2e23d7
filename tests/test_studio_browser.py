"""Xnode Studio end to end in a real headless Chromium (Debian's, through its chromedriver):
the README's workspace with no node (catalogue, the ipfs form checked as you type, preview,
plan), and a fleet of two real test Xnodes (deploy with live progress, roll one back from its
node page, the fleet table agrees). Each page's screenshot is written by the run
(XNODECTL_SCREENSHOTS=docs/studio regenerates the README's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.studio_browser import browser, need_chromium, screenshots_dir, studio, wait
from xnodectl.cli import app as cli

pytestmark = pytest.mark.slow


def _readme_workspace(tmp_path: Path) -> Path:
    result = CliRunner().invoke(
        cli, ["init", str(tmp_path / "xnodes"), "template=ethereum-node", "network=sepolia"]
    )
    assert result.exit_code == 0, result.stderr
    return Path(result.stdout.strip())


def test_new_user_catalogue_form_preview_plan(tmp_path: Path) -> None:
    need_chromium()
    from selenium.webdriver.common.by import By

    shots = screenshots_dir(tmp_path)
    ws = _readme_workspace(tmp_path)
    with studio(ws) as (url, _proc), browser(tmp_path / "profile") as b:
        b.get(url)
        assert b.current_url.endswith("/") and "token=" not in b.current_url
        cards = b.find_elements(By.CSS_SELECTOR, ".card h2 a")
        assert len(cards) == 10
        b.save_screenshot(str(shots / "catalogue.png"))

        b.find_element(By.LINK_TEXT, "ipfs").click()
        wait(lambda: b.find_element(By.ID, "module").text, message="the rendered module")
        box = b.find_element(By.ID, "f-storage_max")
        box.clear()
        box.send_keys("lots")
        error = wait(
            lambda: b.find_element(By.ID, "e-storage_max").text, message="the live field error"
        )
        assert error.startswith("error: parameter 'storage_max' got 'lots', expected text matching")
        assert box.get_attribute("aria-invalid") == "true"
        b.save_screenshot(str(shots / "template-error.png"))

        box.clear()
        box.send_keys("100GB")
        wait(lambda: not b.find_element(By.ID, "e-storage_max").text, message="error cleared")
        wait(lambda: "100GB" in b.find_element(By.ID, "module").text, message="preview update")
        assert "storage_max=100GB" in b.find_element(By.ID, "render-command").text
        b.find_element(By.ID, "plan-button").click()
        plan = wait(lambda: b.find_element(By.ID, "plan").text, 60, "the plan")
        assert "node local" in plan and "app ipfs (ipfs): new module" in plan
        assert "Unknown node" in plan
        b.save_screenshot(str(shots / "plan.png"))

        b.set_window_size(390, 844)  # a phone
        b.get(url.split("?")[0] + "templates/ipfs")
        assert b.execute_script("return document.documentElement.scrollWidth") <= 390
        b.save_screenshot(str(shots / "phone.png"))
    assert "storage_max" not in (ws / "inventory.toml").read_text()  # plan changed nothing
