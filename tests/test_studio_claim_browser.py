"""Claiming a node from the studio in a real headless Chromium: the page's EIP-1193 provider is
injected by the test (tests/test_studio_browser.py's PROVIDER) and signs with the node owner's
real key; the node is the REAL claim service (tests/test_claim.py's `node`); then the node is in
the fleet table. Writes docs/studio/claim.png under XNODECTL_SCREENSHOTS=docs/studio."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.studio_browser import browser, need_chromium, screenshots_dir, studio, wait
from tests.test_claim import Node, node, sign
from tests.test_studio_browser import PROVIDER, _accessible
from tests.test_studio_claim import ws
from xnodectl import inventory as inv
from xnodectl.verify import sign_in

__all__ = ["node", "ws"]  # fixtures: the real claim service, a workspace with its operator key

pytestmark = pytest.mark.slow


def test_claim_with_the_browser_wallet_then_see_the_node(
    node: Node, ws: Path, tmp_path: Path
) -> None:
    need_chromium()
    from selenium.webdriver.common.by import By

    shots = screenshots_dir(tmp_path)
    with studio(ws) as (url, _proc), browser(tmp_path / "p") as b:
        base = url.split("?")[0]
        b.get(url)
        b.get(base + "nodes")
        b.find_element(By.ID, "claim-node").click()
        assert b.find_element(By.ID, "operator-key-fingerprint").text == (
            node.operator_key.fingerprint
        )
        b.find_element(By.ID, "wallet-claim").click()  # no wallet in this browser: said so
        no_wallet = wait(lambda: b.find_element(By.ID, "claim-error").text, 10, "no wallet")
        assert no_wallet.startswith("No Ethereum wallet in this browser")

        owner = node.owner
        b.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {"source": PROVIDER.replace("ADDRESS", repr(owner.address))},
        )
        b.refresh()
        _accessible(b)
        b.find_element(By.ID, "host").send_keys("127.0.0.1")
        port = b.find_element(By.ID, "port")
        port.clear()
        port.send_keys(str(node.port))
        b.find_element(By.ID, "expect_host_key").send_keys(node.host_key.fingerprint)
        b.find_element(By.ID, "wallet-claim").click()
        message, who = wait(
            lambda: b.execute_script("return window.toSign && window.toSign[0].params"),
            20,
            "the wallet's signature request",
        )
        assert who == owner.address
        assert f"\n{sign_in.claim_statement(node.operator_key.fingerprint)}\n" in message
        assert f"\n- {sign_in.host_key_resource(node.host_key.fingerprint)}" in message
        node.assert_nothing_authorized()
        b.execute_script("window.toSign[0].resolve(arguments[0])", sign(owner, message))
        wait(lambda: b.find_element(By.ID, "claim-done").is_displayed(), 20, "the claim")
        assert b.find_element(By.ID, "claimed-node").text == "node-a"
        assert b.find_element(By.ID, "claimed-host").text == "127.0.0.1"
        assert b.find_element(By.ID, "claimed-owner").text == owner.address
        assert b.find_element(By.ID, "claimed-fingerprint").text == node.host_key.fingerprint
        assert b.find_element(By.ID, "claim-error").text == ""
        height = b.execute_script("return document.documentElement.scrollHeight")
        b.set_window_size(1280, min(int(height) + 100, 2400))  # the whole page in one shot
        b.save_screenshot(str(shots / "claim.png"))
        assert node.authorized.read_text().strip() == node.operator_key.line()

        b.find_element(By.ID, "see-fleet").click()
        wait(lambda: b.find_element(By.ID, "fleet").get_attribute("data-loaded"), 30, "status")
        row = b.find_element(By.CSS_SELECTOR, '#fleet-rows tr[data-node="node-a"]')
        assert row.find_element(By.CSS_SELECTOR, "th a").text == "node-a"
    entry = inv.load(ws / inv.FILENAME).nodes["node-a"]
    assert entry.owner == owner.address and entry.host == "127.0.0.1"
