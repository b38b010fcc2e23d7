# The wallet gate in front of a template's web UI: the monitoring template rendered with
# wallet_gate = true (tests/golden/monitoring/example.nix) puts Grafana at /grafana/ behind a
# Sign-In with Ethereum. Without a session the proxy answers with a redirect to the sign-in page
# (401 from the gate, turned into 302 by nginx); after the owner signs in with a test wallet the
# same URL answers 200; a stranger's wallet is refused; logout ends the session; the gate listens
# on loopback only and its check endpoint is internal to nginx.
{ pkgs, self }:
let
  python = pkgs.python3.withPackages (ps: [ ps.eth-account ]);
  # Throwaway test wallets generated at build time (never a real key).
  # nixpkgs pkgs/build-support/trivial-builders/default.nix (runCommand, writeText)
  wallets = pkgs.runCommand "xnode-gate-test-wallets" { nativeBuildInputs = [ python ]; } ''
    mkdir -p $out
    python3 - <<'PY'
    import os
    from eth_account import Account
    out = os.environ["out"]
    for name in ("owner", "stranger"):
        account = Account.create()
        with open(f"{out}/{name}.key", "w") as handle:
            handle.write(bytes(account.key).hex() + "\n")
        with open(f"{out}/{name}.address", "w") as handle:
            handle.write(account.address + "\n")
    PY
  '';
  # What the sign-in page's script does with window.ethereum, done with eth-account: fetch the
  # prepared EIP-4361 message, personal_sign it, post it; prints the session cookie.
  signIn = pkgs.writeText "sign-in.py" ''
    import json
    import sys
    import urllib.error
    import urllib.request

    from eth_account import Account
    from eth_account.messages import encode_defunct

    key_file, base = sys.argv[1], sys.argv[2]
    account = Account.from_key(open(key_file).read().strip())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    prepared = json.load(opener.open(f"{base}/auth/nonce?address={account.address}"))
    message = prepared["message"]
    signature = "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()
    body = json.dumps({"message": message, "signature": signature}).encode()
    request = urllib.request.Request(f"{base}/auth/login", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        response = opener.open(request)
    except urllib.error.HTTPError as exc:
        print(f"refused {exc.code}: {json.load(exc)['error']}")
        sys.exit(1)
    print(response.headers["Set-Cookie"])
  '';
in
pkgs.testers.runNixOSTest {
  name = "xnode-wallet-gate";

  nodes.machine = { ... }: {
    imports = [
      self.nixosModules.default
      ./lib/secret-upload.nix
      ../tests/golden/monitoring/example.nix
    ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    xnode.owner.allowUnreachable = true; # reached through the test driver, not SSH
    # The owner address as modules/owner.nix would publish it (known only once the wallet is built).
    environment.etc."xnode/owner-address".source = "${wallets}/owner.address";
    environment.systemPackages = [ python ];
    virtualisation.memorySize = 2048;

    # Stands in for the deploy engine's secret upload, as in vm-tests/monitoring.nix.
    xnodeTest.secretsBefore = [ "grafana.service" ];
    xnodeTest.secrets.monitoring = {
      grafana_admin_password.owner = "grafana";
      grafana_secret_key.owner = "grafana";
    };
  };

  testScript = ''
    BASE = "http://127.0.0.1"
    WALLETS = "${wallets}"
    SIGN_IN = "${signIn}"

    def status(path, cookie=None):
        header = f"-H 'Cookie: {cookie}' " if cookie else ""
        return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {header}{BASE}{path}").strip()

    machine.start()
    machine.wait_for_unit("xnode-gate.service")
    machine.wait_for_unit("nginx.service")
    machine.wait_for_unit("grafana.service")
    machine.wait_for_open_port(3000)
    machine.wait_for_open_port(80)
    machine.wait_until_succeeds("curl -sf http://127.0.0.1:3000/grafana/api/health || curl -sf http://127.0.0.1:3000/api/health", timeout=300)

    with subtest("the gate listens on loopback only"):
        machine.succeed("ss -Htln 'sport = :8741' | grep -F 127.0.0.1:8741")

    with subtest("without a session: redirected to the sign-in page"):
        t.assertEqual(status("/grafana/api/health"), "302")
        location = machine.succeed(
            f"curl -s -o /dev/null -w '%{{redirect_url}}' {BASE}/grafana/api/health"
        ).strip()
        t.assertTrue(location.endswith("/auth/login?next=/grafana/api/health"), location)
        page = machine.succeed(f"curl -sf {BASE}/auth/login")
        t.assertIn("/auth/signin.js", page)
        machine.succeed(f"curl -sf {BASE}/auth/signin.js | grep -F personal_sign")
        # The subrequest endpoint is internal to nginx.
        t.assertEqual(status("/auth/check"), "404")

    with subtest("a stranger's wallet is refused"):
        out = machine.fail(f"python3 {SIGN_IN} {WALLETS}/stranger.key {BASE}")
        t.assertIn("refused 403", out)

    with subtest("the owner signs in: 200 through the gate"):
        set_cookie = machine.succeed(f"python3 {SIGN_IN} {WALLETS}/owner.key {BASE}").strip()
        attributes = [a.strip() for a in set_cookie.split(";")]
        t.assertIn("HttpOnly", attributes)
        t.assertIn("SameSite=Strict", attributes)
        cookie = attributes[0]
        t.assertEqual(status("/grafana/api/health", cookie), "200")
        # Grafana itself answered (its health JSON), not the gate.
        machine.succeed(f"curl -sf -H 'Cookie: {cookie}' {BASE}/grafana/api/health | grep -i database")

    with subtest("logout ends the session"):
        machine.succeed(f"curl -sf -X POST -H 'Cookie: {cookie}' {BASE}/auth/logout")
        t.assertEqual(status("/grafana/api/health", cookie), "302")

    with subtest("a forged cookie does not pass"):
        t.assertEqual(status("/grafana/api/health", "xnode_session=forged"), "302")
  '';
}
