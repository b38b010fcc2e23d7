# VM test of the `ethereum-node` template (golden example render: sepolia, postmerge history,
# metrics on). No network, so nothing syncs; what is proven offline:
# - ethereum-jwt.service writes a 32-byte hex secret, root-only (0400 in a 0700 directory), kept
#   across restarts; geth and lighthouse each receive it through LoadCredential;
# - geth serves sepolia (eth_chainId 0xaa36a7) on the local JSON-RPC port;
# - the Engine API (8551) answers 401 without a JWT and with a JWT signed by another key, and
#   answers a request signed (HS256) with the node's secret;
# - lighthouse beacon_node runs, as its DynamicUser, with the expected flags;
# - from a second VM only the p2p ports pass the firewall (30303 answers; 9000 is let through and
#   refused because lighthouse opens it only after checkpoint sync), while 8545, 8546, 8551 and
#   5052 are dropped; on the node they listen on 127.0.0.1 only;
# - the JWT value is nowhere in the system closure.
# Not provable offline: the beacon REST API (5052) starts only after the checkpoint state has been
# downloaded, so the template's HTTP probe on /eth/v1/node/version is not run here.
{ pkgs, self }:
let
  checkpointHost = "checkpoint-sync.sepolia.ethpandaops.io";
in
pkgs.testers.runNixOSTest {
  name = "xnode-template-ethereum-node";
  globalTimeout = 1800;

  nodes.node = { lib, pkgs, ... }: {
    imports = [ self.nixosModules.default ../tests/golden/ethereum-node/example.nix ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # Test VMs are reached through the test driver's backdoor, not SSH.
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 4096;
    virtualisation.diskSize = 8192;
    virtualisation.cores = 2;

    # The checkpoint server resolves to a local port that accepts connections and never answers,
    # so lighthouse stays up waiting for the state (instead of failing at once on a DNS error)
    # and its command line can be inspected.
    # nixpkgs nixos/modules/config/networking.nix (networking.hosts)
    networking.hosts."127.0.0.1" = [ checkpointHost "sepolia.beaconstate.info" ];
    systemd.services.checkpoint-blackhole = {
      wantedBy = [ "multi-user.target" ];
      before = [ "lighthouse-beacon.service" ];
      serviceConfig.ExecStart =
        "${pkgs.socat}/bin/socat TCP-LISTEN:443,bind=127.0.0.1,fork,reuseaddr SYSTEM:'sleep 3600'";
    };
    environment.systemPackages = [ pkgs.procps pkgs.iproute2 ];
  };

  nodes.client = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.netcat ];
  };

  testScript = builtins.readFile ./lib/probes.py + ''
    import base64, hashlib, hmac, os

    JWT_FILE = "/var/lib/ethereum-jwt/jwt.hex"
    CHAIN_ID = "0xaa36a7"  # sepolia
    RPC = json.dumps({"jsonrpc": "2.0", "method": "eth_chainId", "params": [], "id": 1})

    def b64url(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def engine_token(key):
        """An HS256 JWT as the Engine API spec wants it: header + {"iat": now}, signed with key."""
        now = int(node.succeed("date +%s").strip())  # the node's clock: geth allows +-60 s
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64url(json.dumps({"iat": now}).encode())
        signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64url(signature)}"

    def post(port, token=None):
        """(HTTP status, body) of an eth_chainId call on a local port."""
        auth = f"-H 'Authorization: Bearer {token}'" if token else ""
        out = node.succeed(
            f"curl -s -w '\\n%{{http_code}}' -H 'Content-Type: application/json' {auth} "
            f"--data '{RPC}' http://127.0.0.1:{port}"
        )
        body, _, status = out.rpartition("\n")
        return int(status), body

    def connect_code(port):
        """curl's exit code for a TCP connect from the client: 0 open, 7 refused, 28 dropped."""
        status, _ = client.execute(f"curl -s --connect-timeout 5 telnet://node:{port} </dev/null")
        return status

    start_all()

    with subtest("health probes: units and local ports, for the node's deploy agent too"):
        # The beacon API's HTTP probe needs a checkpoint download, impossible offline.
        run_health_probes(node, "ethereum-node", kinds=("systemd", "tcp"))
        node.wait_for_open_port(8546)

    with subtest("the JWT is made on the node, root-only, and kept"):
        node.succeed(f"grep -Eqx '[0-9a-f]{{64}}' {JWT_FILE}")
        t.assertEqual(node.succeed(f"stat -c '%a %U %G' {JWT_FILE}").strip(), "400 root root")
        t.assertEqual(node.succeed("stat -c '%a %U' /var/lib/ethereum-jwt").strip(), "700 root")
        secret = node.succeed(f"cat {JWT_FILE}").strip()

    with subtest("geth and lighthouse get the secret through LoadCredential"):
        t.assertEqual(node.succeed("cat /run/credentials/geth-sepolia.service/jwt").strip(), secret)
        node.wait_until_succeeds("test -s /run/credentials/lighthouse-beacon.service/LIGHTHOUSE_JWT")
        t.assertEqual(
            node.succeed("cat /run/credentials/lighthouse-beacon.service/LIGHTHOUSE_JWT").strip(),
            secret,
        )
        # The unit may start geth from a shell script: find the geth process itself.
        geth_pid = node.succeed("pgrep -f -- '/bin/geth --' | head -n1").strip()
        geth_cmd = node.succeed(f"tr '\\0' ' ' < /proc/{geth_pid}/cmdline")
        for flag in ("--sepolia", "--authrpc.jwtsecret /run/credentials/geth-sepolia.service/jwt",
                     "--history.chain postmerge", "--http.addr 127.0.0.1"):
            assert flag in geth_cmd or flag.replace(" ", "=") in geth_cmd, f"{flag}: {geth_cmd}"

    with subtest("geth serves sepolia on the local JSON-RPC port"):
        status, body = post(8545)
        t.assertEqual(status, 200)
        t.assertEqual(json.loads(body)["result"], CHAIN_ID)

    with subtest("the Engine API wants a JWT signed with the node's secret"):
        status, _ = post(8551)
        t.assertEqual(status, 401)
        status, _ = post(8551, engine_token(os.urandom(32)))
        t.assertEqual(status, 401)
        status, body = post(8551, engine_token(bytes.fromhex(secret)))
        t.assertEqual(status, 200)
        t.assertEqual(json.loads(body)["result"], CHAIN_ID)

    with subtest("lighthouse beacon_node runs with the expected flags"):
        # Command line and user are read in one go, while the process is there.
        node.wait_until_succeeds(
            "pid=$(pgrep -f 'lighthouse beacon_node' | head -n1) && "
            "tr '\\0' ' ' < /proc/$pid/cmdline > /root/lighthouse.cmdline && "
            "ps -o user:32= -p $pid > /root/lighthouse.user",
            timeout=180,
        )
        cmd = node.succeed("cat /root/lighthouse.cmdline")
        for flag in (
            "--network sepolia",
            "--execution-endpoint http://127.0.0.1:8551",
            "--execution-jwt /run/credentials/lighthouse-beacon.service/LIGHTHOUSE_JWT",
            "--checkpoint-sync-url https://${checkpointHost}",
            "--http-address 127.0.0.1",
            "--http-port 5052",
            "--port 9000",
            "--quic-port 9001",
            "--metrics-address 127.0.0.1",
        ):
            assert flag in cmd, f"{flag} missing from: {cmd}"
        t.assertEqual(node.succeed("cat /root/lighthouse.user").strip(), "lighthouse-beacon")

    with subtest("RPC and Engine API listen on loopback only"):
        listening = node.succeed("ss -ltnH")
        for line in listening.splitlines():
            local = line.split()[3]
            if local.rsplit(":", 1)[-1] in ("8545", "8546", "8551", "6060"):
                assert local.startswith("127.0.0.1:"), f"{local} listens beyond loopback"

    with subtest("from a second VM only the p2p ports pass the firewall"):
        client.wait_for_unit("multi-user.target")
        client.succeed("nc -z -w 5 node 30303")
        t.assertEqual(connect_code(9000), 7)  # let through, refused: nothing listens offline
        for port in (8545, 8546, 8551, 5052, 6060, 5054):
            t.assertEqual(connect_code(port), 28, f"port {port} is not dropped")

    with subtest("the JWT is not in the system closure"):
        # xargs may run grep in several batches (exit 123 when one finds nothing): judge the
        # output, and prove the same search finds what IS in the closure (positive control: the
        # JWT's path, written into the units) before trusting its silence about the value.
        closure = "nix-store -qR /run/current-system | xargs grep -rlFs -- "
        control = node.succeed(closure + f"'{JWT_FILE}' || true").strip()
        t.assertNotEqual(control, "", "the closure search finds nothing at all: it proves nothing")
        found = node.succeed(closure + f"'{secret}' || true").strip()
        t.assertEqual(found, "")

    with subtest("the secret survives a restart of its unit (which restarts both clients)"):
        node.succeed("systemctl restart ethereum-jwt.service")
        t.assertEqual(node.succeed(f"cat {JWT_FILE}").strip(), secret)
        node.wait_for_unit("geth-sepolia.service")
        node.wait_for_open_port(8551)
        node.wait_until_succeeds(
            f"test \"$(curl -s -o /dev/null -w '%{{http_code}}' -H 'Content-Type: application/json' "
            f"--data '{RPC}' http://127.0.0.1:8551)\" = 401"
        )
        status, body = post(8551, engine_token(bytes.fromhex(secret)))
        t.assertEqual(status, 200)
  '';
}
