"""The sign-in page of the wallet gate: plain HTML and a small script, no external CDN.

The server prepares the EIP-4361 text (it has the checksum and time code); the browser wallet
shows it to the owner and signs it with personal_sign; the server verifies everything again.
"""

from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in to {node}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem; }}
button {{ font-size: 1rem; padding: .6rem 1.2rem; cursor: pointer; }}
#status {{ margin-top: 1rem; min-height: 1.5rem; }}
.error {{ color: #b00020; }}
</style>
</head>
<body>
<h1>Sign in to {node}</h1>
<p>This Xnode's apps are open to its owner's wallet{allow_list}. Sign in with your Ethereum
wallet: it shows a Sign-In with Ethereum (EIP-4361) message for this site; nothing is sent
on-chain and no fee is charged.</p>
<button id="signin" type="button">Sign in with wallet</button>
<button id="signout" type="button">Sign out</button>
<p id="status" role="status"></p>
<script src="/auth/signin.js"></script>
</body>
</html>
"""

SCRIPT = r"""'use strict';
(function () {
  const status = document.getElementById('status');
  function show(text, isError) {
    status.textContent = text;
    status.className = isError ? 'error' : '';
  }
  function nextPath() {
    // Resolved the way the browser will (it drops TAB, CR and LF and reads '\\' as '/'), and
    // kept only when it stays on this origin: never an open redirect. The absolute URL is
    // returned, so a path such as '//evil.example' cannot turn protocol-relative afterwards.
    const next = new URLSearchParams(window.location.search).get('next') || '/';
    try {
      const url = new URL(next, window.location.origin);
      if (url.origin === window.location.origin) return url.href;
    } catch (err) { /* not a URL at all */ }
    return window.location.origin + '/';
  }
  async function json(response) {
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || ('HTTP ' + response.status));
    return body;
  }
  async function signIn() {
    if (!window.ethereum) {
      show('No Ethereum wallet found in this browser (install one, e.g. MetaMask).', true);
      return;
    }
    try {
      show('Waiting for the wallet...');
      const accounts = await window.ethereum.request({ method: 'eth_requestAccounts' });
      const address = accounts[0];
      const prepared = await json(await fetch('/auth/nonce?address=' + encodeURIComponent(address),
        { credentials: 'same-origin', cache: 'no-store' }));
      const signature = await window.ethereum.request({
        method: 'personal_sign', params: [prepared.message, address] });
      await json(await fetch('/auth/login', {
        method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ message: prepared.message, signature: signature }) }));
      show('Signed in.');
      window.location.assign(nextPath());
    } catch (err) {
      show('Sign-in failed: ' + (err && err.message ? err.message : err), true);
    }
  }
  async function signOut() {
    await fetch('/auth/logout', { method: 'POST', credentials: 'same-origin' });
    show('Signed out.');
  }
  // Arriving from another site, the browser withholds the SameSite=Strict cookie; this
  // same-origin request carries it, so a signed-in owner goes straight on.
  fetch('/auth/session', { credentials: 'same-origin', cache: 'no-store' }).then((response) => {
    if (response.ok) window.location.replace(nextPath());
  }).catch(() => {});
  document.getElementById('signin').addEventListener('click', signIn);
  document.getElementById('signout').addEventListener('click', signOut);
})();
"""


def render(node: str, extra_allowed: int) -> bytes:
    allow_list = f" and {extra_allowed} other allowed address(es)" if extra_allowed else ""
    return PAGE.format(node=html.escape(node), allow_list=allow_list).encode()
