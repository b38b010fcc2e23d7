# vaultwarden template (its example: PostgreSQL backend, route exposed): vaultwarden starts offline
# with the admin token from the secret file; the app's health probes pass; /vault/alive answers
# directly and, from a second VM, through the public proxy route; the admin page accepts the token
# and refuses another; the data lives in PostgreSQL; vaultwarden's own port and PostgreSQL are not
# reachable from the second VM; the token is not in the system closure nor in the unit.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "xnode-template-vaultwarden";

  nodes.machine = {
    imports = [
      self.nixosModules.default
      ./lib/secret-upload.nix
      ../tests/golden/vaultwarden/example.nix
    ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # Test VMs are reached through the test driver's backdoor, not SSH (modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 1536;

    # Stands in for the deploy engine's secret upload (done before activation): a random token
    # written at boot, before vaultwarden's environment file is made, so it is nowhere in the store.
    xnodeTest.secretsBefore = [ "vaultwarden-admin-token.service" ];
    xnodeTest.secrets.vaultwarden.admin_token.script =
      "head -c 32 /dev/urandom | base64 | tr -d '/+=\\n'";
  };

  nodes.client = { };

  testScript = builtins.readFile ./lib/probes.py + ''
    def admin_login_headers(token):
        return machine.succeed(
            "curl -s -D - -o /dev/null"
            f" --data-urlencode 'token={token}' http://127.0.0.1:8222/vault/admin"
        ).lower()

    start_all()
    machine.wait_for_unit("multi-user.target")
    run_health_probes(machine, "vaultwarden")
    token = machine.succeed("cat /var/lib/xnode/secrets/vaultwarden/admin_token").strip()

    with subtest("the vault answers under /vault/"):
        machine.succeed("curl -sf http://127.0.0.1:8222/vault/alive")
        machine.succeed("curl -sf http://127.0.0.1/vault/alive")
        machine.succeed("curl -sf http://127.0.0.1:8222/vault/ | grep -qiE 'vaultwarden|bitwarden'")

    with subtest("the admin page takes the token from the secret and refuses another"):
        # 401 + login form: the admin page is enabled (without a token it answers 200 "disabled").
        unauthenticated = machine.succeed(
            "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8222/vault/admin"
        ).strip()
        assert unauthenticated == "401", unauthenticated
        assert "set-cookie: vw_admin=" in admin_login_headers(token)
        assert "set-cookie: vw_admin=" not in admin_login_headers("wrong-token")

    with subtest("the data lives in PostgreSQL"):
        machine.succeed(
            "runuser -u postgres -- psql -d vaultwarden -tAc 'select count(*) from users'"
        )

    with subtest("the proxy route is public, the app's own port and PostgreSQL are not"):
        for line in machine.succeed("ss -ltnH").splitlines():
            local = line.split()[3]
            if local.endswith(":8222") or local.endswith(":5432"):
                assert local.startswith(("127.0.0.1:", "[::1]:")), f"{local} listens beyond loopback"
        client.wait_for_unit("multi-user.target")
        client.wait_until_succeeds("curl -sf --max-time 5 http://machine/vault/alive", timeout=60)
        client.fail("curl -sS --max-time 5 http://machine:8222/vault/alive")
        client.fail("timeout 5 bash -c 'exec 3<>/dev/tcp/machine/5432'")

    with subtest("the admin token is not in the system closure nor in the unit"):
        closure = "nix-store -qR /run/current-system | xargs grep -rlFs --"
        # The search works: the environment file's path is in the unit file.
        assert machine.succeed(f"{closure} /run/xnode-vaultwarden/env || true").strip()
        found = machine.succeed(f"{closure} '{token}' || true").strip()
        assert found == "", f"admin token found in the store: {found}"
        assert token not in machine.succeed("systemctl cat vaultwarden.service")
        assert token not in machine.succeed("ps -eo args")
  '';
}
