# monitoring template: Prometheus, the node exporter and Grafana start offline; the app's health
# probes (read back from /etc/xnode/apps.json) pass; Prometheus scrapes the node exporter and, found
# automatically through xnode.apps, a second app's metrics port; Grafana serves its login page under
# /grafana/ (directly and through the proxy), accepts the admin password from the secret file and has
# the Prometheus datasource; a rotated admin password file takes effect without touching the UI; no port is reachable from a second VM; the secrets are not in the
# system closure.
{ pkgs, self }:
let
  demoPort = 9555;
in
pkgs.testers.runNixOSTest {
  name = "xnode-template-monitoring";

  nodes.machine = { config, ... }: {
    imports = [
      self.nixosModules.default
      ./lib/secret-upload.nix
      ../tests/golden/monitoring/defaults.nix
    ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # Test VMs are reached through the test driver's backdoor, not SSH (modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 2048;

    # A second app with a metrics port, declared the way a rendered template declares it. A
    # minimal node exporter stands in for its metrics endpoint.
    xnode.apps.metrics-demo = {
      template = "vm-test";
      ports = [{ port = demoPort; protocol = "tcp"; purpose = "demo metrics"; metrics = true; }];
    };
    systemd.services.metrics-demo = {
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        DynamicUser = true;
        ExecStart = "${pkgs.prometheus-node-exporter}/bin/node_exporter"
          + " --web.listen-address=127.0.0.1:${toString demoPort}"
          + " --collector.disable-defaults --collector.time";
      };
    };

    # Stands in for the deploy engine's secret upload (done before activation): random values
    # written at boot, before Grafana starts, so they exist nowhere in the Nix store.
    xnodeTest.secretsBefore = [ "grafana.service" ];
    xnodeTest.secrets.monitoring = {
      grafana_admin_password.owner = "grafana";
      grafana_secret_key.owner = "grafana";
    };
  };

  nodes.client = { };

  testScript = builtins.readFile ./lib/probes.py + ''
    def prom_value(query):
        out = machine.succeed(
            f"curl -sf http://127.0.0.1:9090/api/v1/query --data-urlencode 'query={query}'"
        )
        result = json.loads(out)["data"]["result"]
        return [r["value"][1] for r in result]

    start_all()
    machine.wait_for_unit("multi-user.target")
    run_health_probes(machine, "monitoring")

    with subtest("Prometheus scrapes the node exporter"):
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=up{job=\"node\"}'"
            " | grep -q '\"1\"\\]'",
            timeout=300,
        )
        assert prom_value('up{job="node"}') == ["1"]

    with subtest("a second app's metrics port is found through xnode.apps and scraped"):
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/query"
            " --data-urlencode 'query=up{xnode_app=\"metrics-demo\"}' | grep -q '\"1\"\\]'",
            timeout=300,
        )
        assert prom_value('up{xnode_app="metrics-demo"}') == ["1"]

    with subtest("Grafana: login page, admin password from the secret, datasource provisioned"):
        page = machine.succeed("curl -sf http://127.0.0.1:3000/grafana/login")
        assert "Grafana" in page
        proxied = machine.succeed("curl -sf http://127.0.0.1/grafana/login")
        assert "Grafana" in proxied
        password = machine.succeed(
            "cat /var/lib/xnode/secrets/monitoring/grafana_admin_password"
        ).strip()
        machine.succeed(f"curl -sf -u 'admin:{password}' http://127.0.0.1:3000/grafana/api/org")
        machine.fail("curl -sf -u admin:admin http://127.0.0.1:3000/grafana/api/org")
        source = json.loads(machine.succeed(
            f"curl -sf -u 'admin:{password}'"
            " http://127.0.0.1:3000/grafana/api/datasources/uid/xnode-prometheus"
        ))
        assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090", source
        machine.succeed(
            f"curl -sf -u 'admin:{password}' http://127.0.0.1:3000/grafana/api/datasources/proxy"
            "/uid/xnode-prometheus/api/v1/query --data-urlencode 'query=up' | grep -q success"
        )

    with subtest("a rotated admin password takes effect (Grafana reads it only at admin creation)"):
        old = password
        machine.wait_for_unit("grafana-admin-password.service")
        import secrets
        rotated = "xnode-grafana-" + secrets.token_hex(12)
        secret = "/var/lib/xnode/secrets/monitoring/grafana_admin_password"
        # As a deploy uploads it: a new file moved into place; the apps module's path unit
        # restarts grafana-admin-password.service (modules/apps.nix, restartOnSecretChange).
        machine.succeed(
            f"(umask 077; printf '%s' '{rotated}' > {secret}.new) && chown grafana {secret}.new"
            f" && mv {secret}.new {secret}"
        )
        machine.wait_until_succeeds(
            f"curl -sf -u 'admin:{rotated}' http://127.0.0.1:3000/grafana/api/org", timeout=120
        )
        machine.fail(f"curl -sf -u 'admin:{old}' http://127.0.0.1:3000/grafana/api/org")
        password = rotated

    with subtest("private ports are not reachable from another machine"):
        listening = machine.succeed("ss -ltnH")
        for port in (9090, 9100, 3000, 80):
            for line in listening.splitlines():
                local = line.split()[3]
                if local.endswith(f":{port}"):
                    assert local.startswith("127.0.0.1:"), f"{local} listens beyond loopback"
        client.wait_for_unit("multi-user.target")
        for port in (9090, 9100, 3000, 80):
            client.fail(f"curl -sS --max-time 5 http://machine:{port}/")

    with subtest("secret values are not in the system closure"):
        closure = "nix-store -qR /run/current-system | xargs grep -rlFs --"
        # The search works: the secret's path is in Grafana's generated config.
        assert machine.succeed(
            f"{closure} /var/lib/xnode/secrets/monitoring/grafana_admin_password || true"
        ).strip()
        for name in ("grafana_admin_password", "grafana_secret_key"):
            value = machine.succeed(f"cat /var/lib/xnode/secrets/monitoring/{name}").strip()
            assert len(value) >= 24
            found = machine.succeed(f"{closure} '{value}' || true").strip()
            assert found == "", f"{name} found in the store: {found}"
  '';
}
