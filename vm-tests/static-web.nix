# VM test of the `static-web` template (golden example render: www.example.org + example.org from
# the local root /var/www/example, ACME on). No network, so no certificate can be ordered: nginx
# serves the ACME module's self-signed placeholder, which is enough to prove the HTTPS site, the
# HTTP->HTTPS redirect, the security headers and the health probe's loopback copy; a second VM
# reaches 80 and 443 (declared public) but not the probe port.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "xnode-template-static-web";
  globalTimeout = 900;

  nodes.node = { ... }: {
    imports = [ self.nixosModules.default ../tests/golden/static-web/example.nix ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # A test VM has no owner and no operator key (xnode.owner in modules/owner.nix).
    xnode.owner.allowUnreachable = true;
  };
  nodes.client = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.netcat ];
  };

  testScript = builtins.readFile ./lib/probes.py + ''
    site = "www.example.org"
    marker = "hello from the xnode static-web template"

    start_all()

    with subtest("the local root starts with a placeholder page, then gets the site"):
        node.wait_for_unit("nginx.service")
        node.succeed("curl -sf http://127.0.0.1:8088/ | grep -F 'put the site in /var/www/example'")
        node.succeed(f"echo '<h1>{marker}</h1>' > /var/www/example/index.html")

    with subtest("health probes of template.toml"):
        node.wait_for_unit("nginx.service")
        node.wait_for_open_port(80)
        node.wait_for_open_port(443)
        node.wait_for_open_port(8088)
        node.succeed(f"curl -sf http://127.0.0.1:8088/ | grep -F '{marker}'")
        node.succeed("ss -Htln 'sport = :8088' | grep -F 127.0.0.1:8088")

    with subtest("every health probe of the template passes, for the node's deploy agent too"):
        run_health_probes(node, "static-web")

    with subtest("HTTPS with the ACME placeholder certificate, HTTP redirects"):
        https = f"curl -sk --resolve {site}:443:127.0.0.1 https://{site}/"
        node.wait_until_succeeds(f"{https} | grep -F '{marker}'", timeout=120)
        node.succeed(f"curl -sk --resolve example.org:443:127.0.0.1 https://example.org/ | grep -F '{marker}'")
        code = node.succeed(
            f"curl -s -o /dev/null -w '%{{http_code}}' --resolve {site}:80:127.0.0.1 http://{site}/"
        ).strip()
        t.assertEqual(code, "301")
        # The ACME challenge path stays on plain HTTP (not redirected).
        code = node.succeed(
            "curl -s -o /dev/null -w '%{http_code}' "
            f"--resolve {site}:80:127.0.0.1 http://{site}/.well-known/acme-challenge/missing"
        ).strip()
        t.assertEqual(code, "404")

    with subtest("security headers"):
        headers = node.succeed(f"curl -skD - -o /dev/null --resolve {site}:443:127.0.0.1 https://{site}/").lower()
        for expected in (
            "content-security-policy: default-src 'self'",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "referrer-policy: strict-origin-when-cross-origin",
            "permissions-policy: camera=()",
            "strict-transport-security: max-age=31536000",
        ):
            t.assertIn(expected, headers)
        t.assertNotIn("server: nginx/", headers)

    with subtest("80 and 443 are public, the probe port is not"):
        client.wait_for_unit("multi-user.target")
        ip = client.succeed("getent ahostsv4 node | head -n1 | cut -d' ' -f1").strip()
        client.succeed(f"curl -sk --resolve {site}:443:{ip} https://{site}/ | grep -F '{marker}'")
        client.succeed("nc -z -w 5 node 80")
        client.fail("nc -z -w 5 node 8088")
  '';
}
