# dev-env template (defaults): code-server starts offline with the password from the secret file;
# the app's health probes pass; the login page answers directly and through the proxy at /code/;
# the right password opens the editor and a wrong one does not; the workspace exists for the user;
# code-server and the proxy are unreachable from a second VM; the password is not in the system
# closure nor in the unit's environment.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "xnode-template-dev-env";

  nodes.machine = {
    imports = [
      self.nixosModules.default
      ./lib/secret-upload.nix
      ../tests/golden/dev-env/defaults.nix
    ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # Test VMs are reached through the test driver's backdoor, not SSH (modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 2048;

    # Stands in for the deploy engine's secret upload (done before activation): a random password
    # written at boot, before code-server starts, so it exists nowhere in the Nix store.
    xnodeTest.secretsBefore = [ "code-server.service" ];
    xnodeTest.secrets.dev-env.password = { };
  };

  nodes.client = { };

  testScript = builtins.readFile ./lib/probes.py + ''
    def status(args):
        return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {args}").strip()

    start_all()
    machine.wait_for_unit("multi-user.target")
    run_health_probes(machine, "dev-env")
    password = machine.succeed("cat /var/lib/xnode/secrets/dev-env/password").strip()

    with subtest("the login page answers, directly and through the proxy"):
        assert status("http://127.0.0.1:4444/") == "302"
        assert "code-server" in machine.succeed("curl -sf http://127.0.0.1:4444/login").lower()
        assert "code-server" in machine.succeed("curl -sf http://127.0.0.1/code/login").lower()
        assert status("http://127.0.0.1/code/healthz") == "200"

    def landing(jar):
        """Where GET / ends up after redirects (the editor opens the workspace folder)."""
        return machine.succeed(
            f"curl -sfL -b {jar} -o /dev/null -w '%{{url_effective}}' http://127.0.0.1:4444/"
        ).strip()

    with subtest("the password from the secret logs in, a wrong one does not"):
        status("-c /tmp/bad.jar --data-urlencode password=wrong http://127.0.0.1:4444/login")
        assert "/login" in landing("/tmp/bad.jar"), landing("/tmp/bad.jar")
        assert status(
            f"-c /tmp/good.jar --data-urlencode 'password={password}' http://127.0.0.1:4444/login"
        ) == "302"
        opened = landing("/tmp/good.jar")
        assert "/login" not in opened, opened

    with subtest("the workspace belongs to the user"):
        owner = machine.succeed("stat -c %U /home/code-server/workspace").strip()
        assert owner == "code-server", owner

    with subtest("code-server and the proxy are not reachable from another machine"):
        for line in machine.succeed("ss -ltnH").splitlines():
            local = line.split()[3]
            if local.endswith(":4444") or local.endswith(":80"):
                assert local.startswith("127.0.0.1:"), f"{local} listens beyond loopback"
        client.wait_for_unit("multi-user.target")
        for port in (4444, 80):
            client.fail(f"curl -sS --max-time 5 http://machine:{port}/")

    with subtest("the password is not in the system closure nor in the unit"):
        closure = "nix-store -qR /run/current-system | xargs grep -rlFs --"
        # The search works: the secret's path is in the unit file.
        assert machine.succeed(f"{closure} /var/lib/xnode/secrets/dev-env/password || true").strip()
        found = machine.succeed(f"{closure} '{password}' || true").strip()
        assert found == "", f"password found in the store: {found}"
        assert password not in machine.succeed("systemctl show -p Environment code-server.service")
        assert password not in machine.succeed("ps -eo args")
  '';
}
