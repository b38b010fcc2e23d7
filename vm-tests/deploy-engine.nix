# VM test of the OPERATOR side of the deploy engine: a deployer VM runs the real `xnodectl deploy`
# (pinned host key, nix copy over SSH, two-phase activation, health probes, confirmation over a new
# connection) against a real NixOS target VM running modules/deploy-agent.nix:
#   1. a successful deploy: the target runs and boots the new generation, the JSON report says so;
#   2. a failing health probe: the target returns to the old system, the boot default never moved;
#   3. a lost connection (the new system closes SSH to new connections): no confirmation arrives,
#      the node's dead-man timer rolls it back, the report says "rolled-back".
# The target systems are specialisations of the target's own configuration (same disks, same
# kernel), built on the host; the deployer's workspace flake wraps each as a one-line derivation so
# `nix build` in the offline deployer VM needs no nixpkgs evaluation.
{ pkgs, self }:
let
  system = pkgs.stdenv.hostPlatform.system;
  healthPort = 8080;

  # A tiny HTTP service the template's health probe reads: 200, or 500 in the "sick" variant.
  healthExec = status: "${pkgs.python3}/bin/python3 ${pkgs.writeText "health-${toString status}.py" ''
    import http.server
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(${toString status}); self.end_headers(); self.wfile.write(b"x")
    http.server.HTTPServer(("127.0.0.1", ${toString healthPort}), H).serve_forever()
  ''}";

  variant = nodes: name: nodes.target.specialisation.${name}.configuration.system.build.toplevel;
  ln = "${pkgs.coreutils}/bin/ln";

  # The deployer's workspace flake: one derivation per variant whose output links to the prebuilt
  # system; appendContext makes the system (and ln) inputs, so the system's whole closure is what
  # `nix copy` moves and the sandboxed build can run ln.
  wsFlake = nodes: pkgs.writeText "flake.nix" ''
    {
      outputs = { self }:
        let
          variants = {
            good = "${variant nodes "good"}";
            sick = "${variant nodes "sick"}";
            nossh = "${variant nodes "nossh"}";
          };
          chosen = variants.''${builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile ./variant)};
          p = builtins.appendContext chosen { ''${chosen} = { path = true; }; };
          ln = builtins.appendContext "${ln}" { "${pkgs.coreutils}" = { path = true; }; };
        in {
          nixosConfigurations.target.config.system.build.toplevel = derivation {
            name = "xnode-system-target";
            system = "${system}";
            builder = ln;
            args = [ "-s" p (placeholder "out") ];
          };
        };
    }
  '';

  probeTemplate = pkgs.writeTextDir "probe-web/template.toml" ''
    name = "probe-web"
    summary = "VM test fixture: an HTTP health probe"
    category = "web"
    [resources]
    min_ram_mb = 1
    min_disk_gb = 0
    [parameters.port]
    type = "port"
    required = true
    description = "health port"
    [[health]]
    kind = "http"
    url = "http://127.0.0.1:{port}/"
    timeout = 10
  '';
  templates = pkgs.symlinkJoin {
    name = "xnode-test-templates";
    paths = [ probeTemplate (pkgs.writeTextDir "probe-web/module.nix.j2" "{ ... }: { }\n") ];
  };
in
pkgs.testers.runNixOSTest {
    name = "xnode-deploy-engine";
    globalTimeout = 1200;

    nodes.target = { lib, ... }: {
      imports = [ self.nixosModules.default ];
      # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.services)
      systemd.services.xnode-test-health = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = healthExec 200;
      };
      xnode.package = self.packages.${system}.xnodectl;
      xnode.owner.allowUnreachable = true;
      xnode.deployAgent.enable = true;
      # nixpkgs nixos/modules/services/networking/ssh/sshd.nix (enable, openFirewall, settings)
      services.openssh.enable = true;
      services.openssh.settings.PermitRootLogin = "prohibit-password";
      # nixpkgs nixos/modules/system/activation/switchable-system.nix
      system.switch.enable = true;
      # nixpkgs nixos/modules/virtualisation/qemu-vm.nix: a real boot loader, so `confirm`'s
      # `switch-to-configuration boot` writes real boot entries.
      virtualisation.useBootLoader = true;
      virtualisation.useEFIBoot = true;
      virtualisation.memorySize = 1024;
      # nixpkgs nixos/modules/system/activation/specialisation.nix (specialisation.<name>.configuration)
      specialisation.good.configuration = {
        environment.etc."xnode-test-variant".text = "good";
      };
      specialisation.sick.configuration = {
        environment.etc."xnode-test-variant".text = "sick";
        systemd.services.xnode-test-health.serviceConfig.ExecStart = lib.mkForce (healthExec 500);
      };
      # New SSH connections are dropped by the firewall; established ones (conntrack) live on.
      specialisation.nossh.configuration = {
        environment.etc."xnode-test-variant".text = "nossh";
        services.openssh.openFirewall = lib.mkForce false;
        # nixpkgs nixos/modules/services/networking/firewall.nix
        networking.firewall.enable = true;
      };
    };

    nodes.deployer = { nodes, ... }: {
      environment.systemPackages = [ self.packages.${system}.xnodectl pkgs.git pkgs.openssh ];
      # nixpkgs nixos/modules/config/nix.nix (nix.settings)
      nix.settings.experimental-features = [ "nix-command" "flakes" ];
      nix.settings.substituters = [ ];
      # nixpkgs nixos/modules/virtualisation/qemu-vm.nix (additionalPaths): the variants and
      # their closures are in the deployer's store, as after a local build.
      virtualisation.additionalPaths =
        map (variant nodes) [ "good" "sick" "nossh" ] ++ [ pkgs.coreutils ];
      virtualisation.memorySize = 2048;
      environment.variables.XNODECTL_TEMPLATES = "${templates}";
    };

    testScript = { nodes, ... }: ''
      import json

      start_all()
      target.wait_for_unit("sshd.service")
      target.wait_for_unit("xnode-test-health.service")
      deployer.wait_for_unit("multi-user.target")

      deployer.succeed("ssh-keygen -q -t ed25519 -N ''' -f /root/.ssh/id_ed25519")
      pub = deployer.succeed("cat /root/.ssh/id_ed25519.pub").strip()
      target.succeed(f"install -d -m 0700 /root/.ssh && echo '{pub}' >> /root/.ssh/authorized_keys")

      deployer.succeed(
          "xnodectl init /ws --node target --host target --port 22",
          "xnodectl node add target target --scan --workspace /ws",
          "cp ${wsFlake nodes} /ws/flake.nix && chmod 0644 /ws/flake.nix",
      )

      def deploy(variant, expect):
          deployer.succeed(f"echo {variant} > /ws/variant && git -C /ws add -A")
          code, out = deployer.execute(
              "xnodectl deploy --json --workspace /ws --confirm-timeout 10 "
              "template=probe-web port=${toString healthPort} --node target"
          )
          report = json.loads(out.strip().splitlines()[-1])
          node = report["nodes"][0]
          assert code == expect, (code, report)
          return node

      old_gen = target.succeed("readlink /nix/var/nix/profiles/system").strip()

      with subtest("a successful deploy moves the running system and the boot default"):
          node = deploy("good", 0)
          assert node["outcome"] == "deployed" and node["state"] == "new", node
          target.succeed("grep -qx good /etc/xnode-test-variant")
          target.succeed('test "$(readlink -f /nix/var/nix/profiles/system)" = "$(readlink -f /run/current-system)"')
          good_gen = target.succeed("readlink /nix/var/nix/profiles/system").strip()
          assert good_gen != old_gen

      with subtest("a failing health probe is rolled back; the boot default never moved"):
          node = deploy("sick", 4)
          assert node["outcome"] == "rolled-back" and node["state"] == "old", node
          assert "health probe failed" in node["rollback_reason"], node
          target.succeed("grep -qx good /etc/xnode-test-variant")
          assert target.succeed("readlink /nix/var/nix/profiles/system").strip() == good_gen

      with subtest("a lost connection: no confirmation, the node rolls itself back"):
          node = deploy("nossh", 4)
          assert node["outcome"] == "rolled-back", node
          assert "confirmation did not arrive" in node["rollback_reason"], node
          target.wait_until_succeeds("grep -qx good /etc/xnode-test-variant", timeout=30)
          assert target.succeed("readlink /nix/var/nix/profiles/system").strip() == good_gen
          deployer.succeed("ssh -o StrictHostKeyChecking=no root@target true")  # reachable again
    '';
}
