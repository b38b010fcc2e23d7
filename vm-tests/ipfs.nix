# VM test of the `ipfs` template (golden example render: lowpower profile, 200GB storage cap, gateway
# route exposed through the proxy). No network: kubo starts, its health probes pass, content added over the RPC
# socket comes back through `ipfs cat`, the gateway and the proxy route; the API and the raw
# gateway port are not reachable from a second VM while the swarm port is.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "xnode-template-ipfs";
  globalTimeout = 1200;

  nodes.node = { lib, ... }: {
    imports = [ self.nixosModules.default ../tests/golden/ipfs/example.nix ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # A test VM has no owner and no operator key (xnode.owner in modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    # The example puts the gateway behind the wallet sign-in; that gate has its own VM test, here
    # the route itself (public, reaching the gateway) is under test.
    xnode.proxy.routes."/ipfs/".walletGate = lib.mkForce false;
    xnode.proxy.routes."/ipns/".walletGate = lib.mkForce false;
    virtualisation.memorySize = 2048;
    virtualisation.diskSize = 4096;
  };
  nodes.client = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.netcat ];
  };

  testScript = ''
    def http_status(machine, url):
        return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {url}").strip()

    start_all()

    with subtest("health probes of template.toml"):
        node.wait_for_unit("ipfs.service")
        node.wait_for_open_port(4001)
        node.wait_for_open_port(8080)
        node.wait_for_open_port(5001)
        node.wait_until_succeeds(
            "test \"$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/ipfs/bafkqaaa)\" = 200",
            timeout=180,
        )
        t.assertEqual(http_status(node, "http://127.0.0.1:5001/api/v0/version"), "405")
        # The metrics path the template declares for the monitoring template.
        node.succeed("curl -sf http://127.0.0.1:5001/debug/metrics/prometheus | grep -q '^go_goroutines'")

    with subtest("parameters reached kubo's live config"):
        config = "/var/lib/ipfs/config"
        node.succeed(f"grep -F '\"StorageMax\": \"200GB\"' {config}")
        # kubo's lowpower profile: connection manager high water 40, DHT client only.
        node.succeed(f"grep -F '\"HighWater\": 40' {config}")
        node.succeed(f"grep -F '\"Type\": \"autoclient\"' {config}")
        node.succeed(f"grep -F '/ip4/127.0.0.1/tcp/5001' {config}")

    with subtest("add and cat, through the gateway and the proxy route"):
        api = "ipfs --api /unix/run/ipfs.sock"
        cid = node.succeed(f"echo hello-xnode-ipfs | {api} add --quieter").strip()
        node.succeed(f"{api} cat {cid} | grep -x hello-xnode-ipfs")
        node.succeed(f"curl -sf http://127.0.0.1:8080/ipfs/{cid} | grep -x hello-xnode-ipfs")
        node.wait_for_open_port(80)
        node.succeed(f"curl -sf http://127.0.0.1/ipfs/{cid} | grep -x hello-xnode-ipfs")

    with subtest("only the swarm port (and the exposed proxy) face the network"):
        client.wait_for_unit("multi-user.target")
        client.succeed("nc -z -w 5 node 4001")
        client.fail("curl -s --max-time 5 http://node:5001/api/v0/version")
        client.fail("curl -s --max-time 5 http://node:8080/ipfs/bafkqaaa")
        client.succeed(f"curl -sf --max-time 5 http://node/ipfs/{cid} | grep -x hello-xnode-ipfs")
  '';
}
