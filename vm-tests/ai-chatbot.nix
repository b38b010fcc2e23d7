# VM test of the `ai-chatbot` template (golden defaults render: CPU ollama, Open WebUI on 8081 behind
# the node's proxy on its own local-only port 8082). No network, so no model can be pulled: the test proves ollama's
# API answers, Open WebUI serves its page directly and through the proxy, the health probes pass,
# and neither ollama, Open WebUI nor the private proxy is reachable from a second VM.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "xnode-template-ai-chatbot";
  globalTimeout = 2400;

  nodes.node = { ... }: {
    imports = [ self.nixosModules.default ../tests/golden/ai-chatbot/defaults.nix ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # A test VM has no owner and no operator key (xnode.owner in modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    # Open WebUI is a large Python application.
    virtualisation.memorySize = 4096;
    virtualisation.cores = 2;
    virtualisation.diskSize = 8192;
    # Offline only: Open WebUI would try to download its RAG embedding model at start-up (as in
    # nixpkgs nixos/tests/open-webui.nix).
    services.open-webui.environment.RAG_EMBEDDING_MODEL = "";
  };
  nodes.client = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.netcat ];
  };

  testScript = builtins.readFile ./lib/probes.py + ''
    start_all()

    with subtest("ollama: unit, port and API (health probes of template.toml)"):
        node.wait_for_unit("ollama.service")
        node.wait_for_open_port(11434)
        out = node.succeed("curl -sf http://127.0.0.1:11434/api/version")
        t.assertIn('"version"', out)
        # Bound to loopback only.
        node.succeed("ss -Htln 'sport = :11434' | grep -F 127.0.0.1:11434")

    with subtest("Open WebUI: unit, health endpoint and page"):
        node.wait_for_unit("open-webui.service")
        node.wait_for_open_port(8081, timeout=900)
        node.wait_until_succeeds("curl -sf http://127.0.0.1:8081/health", timeout=900)
        node.succeed("curl -sf http://127.0.0.1:8081/ | grep -i '<html'")
        node.succeed("ss -Htln 'sport = :8081' | grep -F 127.0.0.1:8081")

    with subtest("the node's proxy serves Open WebUI at the root of port 8082, absolute paths too"):
        node.wait_for_unit("nginx.service")
        node.wait_for_open_port(8082)
        node.succeed("curl -sf http://127.0.0.1:8082/ | grep -i '<html'")
        # Open WebUI's own root paths (API, health) work through the proxy: a full session can.
        node.succeed("curl -sf http://127.0.0.1:8082/health")
        node.succeed("curl -sf http://127.0.0.1:8082/api/config | grep -F '\"name\"'")
        node.succeed("ss -Htln 'sport = :8082' | grep -F 127.0.0.1:8082")

    with subtest("every health probe of the template passes, for the node's deploy agent too"):
        run_health_probes(node, "ai-chatbot")

    with subtest("the model loader was configured with the template's model list"):
        # (It cannot succeed offline; its script must name the model.)
        node.succeed(
            "grep -F llama3.2:3b "
            "$(systemctl show -P ExecStart ollama-model-loader.service | grep -o 'path=[^ ;]*' | cut -d= -f2)"
        )

    with subtest("nothing is reachable from the network"):
        client.wait_for_unit("multi-user.target")
        for port in (11434, 8081, 8082):
            client.fail(f"nc -z -w 5 node {port}")
  '';
}
