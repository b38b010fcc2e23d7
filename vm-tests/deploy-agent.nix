# VM test of the node side of the deploy engine (modules/deploy-agent.nix + xnode-activate) on a
# real NixOS node, where activation is detached with systemd-run (test Xnodes use setsid):
#   - `info` reports systemd-run detaching, the node name and the module's confirm timeout;
#   - a two-phase deploy: the supervisor runs as transient unit xnode-deploy-<id>, the new system
#     is active before `confirm`, the system profile and boot entry move only at `confirm`;
#   - an activation whose unit fails is reported (exit code, log tail) and rolled back;
#   - without a confirmation the dead-man timer re-activates the previous system;
#   - `rollback` returns to the previous generation;
#   - a supervisor killed after activation: the recover timer completes the rollback.
# The deployed systems are specialisations of the node's own configuration, so they are in its
# store without a copy (the operator side's `nix copy` is tested by the engine's tests).
{ pkgs, self }:
let
  system = pkgs.stdenv.hostPlatform.system;
in
pkgs.testers.runNixOSTest {
  name = "xnode-deploy-agent";

  nodes.node = { pkgs, ... }: {
    imports = [ self.nixosModules.default ];
    xnode.package = self.packages.${system}.xnodectl;
    xnode.owner.allowUnreachable = true;
    xnode.deployAgent.confirmTimeout = 20;
    environment.etc."xnode-test-version".text = "1";
    # nixpkgs nixos/modules/system/activation/switchable-system.nix
    system.switch.enable = true;
    # nixpkgs nixos/modules/virtualisation/qemu-vm.nix: a real boot loader, so `confirm`'s
    # `switch-to-configuration boot` writes real boot entries.
    virtualisation.useBootLoader = true;
    virtualisation.useEFIBoot = true;
    virtualisation.memorySize = 1024;
    # nixpkgs nixos/modules/system/activation/specialisation.nix
    specialisation.v2.configuration = {
      environment.etc."xnode-test-version".text = pkgs.lib.mkForce "2";
    };
    specialisation.broken.configuration = {
      # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.services)
      systemd.services.xnode-test-broken = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.Type = "oneshot";
        serviceConfig.ExecStart = "${pkgs.coreutils}/bin/false";
      };
    };
  };

  testScript = ''
    import json

    def xa(*args, ok=True):
        command = "xnode-activate " + " ".join(args)
        out = node.succeed(command) if ok else node.fail(command)
        return json.loads(out.strip().splitlines()[-1])

    def running():
        return node.succeed("readlink -f /run/current-system").strip()

    start_all()
    node.wait_for_unit("multi-user.target")
    base = running()
    v2 = node.succeed(f"readlink -f {base}/specialisation/v2").strip()
    broken = node.succeed(f"readlink -f {base}/specialisation/broken").strip()

    with subtest("info"):
        info = xa("info")
        t.assertEqual(info["detach"], "systemd-run")
        t.assertEqual(info["node"], "node")
        t.assertEqual(info["confirm_timeout"], 20)
        t.assertEqual(info["current"], base)
        before = info["generation"]

    with subtest("two-phase deploy, confirmed"):
        xa("lock", "--holder", "vm-test")
        xa("begin", "--system", v2, "--deploy-id", "d1", "--confirm-timeout", "120")
        t.assertEqual(xa("wait", "--deploy-id", "d1", "--timeout", "120"), {"state": "activated"})
        node.succeed("systemctl is-active xnode-deploy-d1.service")  # the dead-man timer
        node.succeed("grep -qx 2 /etc/xnode-test-version")
        t.assertEqual(running(), v2)
        t.assertEqual(xa("info")["generation"], before)  # boot default not moved yet
        generation = xa("confirm", "--deploy-id", "d1")["generation"]
        t.assertEqual(node.succeed("readlink -f /nix/var/nix/profiles/system").strip(), v2)
        node.wait_until_fails("systemctl is-active xnode-deploy-d1.service", timeout=10)
        xa("unlock", "--holder", "vm-test")

    with subtest("a failing unit: reported and rolled back"):
        xa("begin", "--system", broken, "--deploy-id", "d2", "--confirm-timeout", "120")
        out = xa("wait", "--deploy-id", "d2", "--timeout", "120")
        t.assertEqual(out["state"], "failed")
        t.assertTrue(out["rolled_back"])
        t.assertNotEqual(out["exit_code"], 0)
        t.assertEqual(running(), v2)
        t.assertEqual(xa("info")["generation"], generation)

    with subtest("no confirmation: the dead-man timer rolls back"):
        xa("begin", "--system", base, "--deploy-id", "d3", "--confirm-timeout", "5")
        t.assertEqual(xa("wait", "--deploy-id", "d3", "--timeout", "120"), {"state": "activated"})
        t.assertEqual(running(), base)
        node.wait_until_succeeds(f"test $(readlink -f /run/current-system) = {v2}", timeout=30)
        out = xa("wait", "--deploy-id", "d3", "--timeout", "10")
        t.assertEqual(out["state"], "rolled-back")
        t.assertIn("too late", xa("confirm", "--deploy-id", "d3", ok=False)["error"])
        node.succeed("grep -qx 2 /etc/xnode-test-version")

    with subtest("rollback to the previous generation"):
        xa("begin", "--system", base, "--deploy-id", "d4", "--confirm-timeout", "120")
        xa("wait", "--deploy-id", "d4", "--timeout", "120")
        newest = xa("confirm", "--deploy-id", "d4")["generation"]
        t.assertEqual(newest, generation + 1)
        out = xa("rollback")
        t.assertEqual((out["generation"], out["path"]), (generation, v2))
        t.assertEqual(running(), v2)

    with subtest("the supervisor killed: the recover timer completes the decision"):
        node.succeed("systemctl is-active xnode-deploy-recover.timer")
        xa("begin", "--system", base, "--deploy-id", "d5", "--confirm-timeout", "5")
        t.assertEqual(xa("wait", "--deploy-id", "d5", "--timeout", "120"), {"state": "activated"})
        node.succeed("systemctl kill --signal=KILL xnode-deploy-d5.service")
        # nobody calls the agent: the timer (every 30 s) rolls back once the window has passed
        node.wait_until_succeeds(
            "grep -qx rolled-back /var/lib/xnode/deploy/d5/state", timeout=90
        )
        t.assertEqual(running(), v2)
        t.assertIn("supervisor died", node.succeed("readlink /var/lib/xnode/deploy/d5/decision"))
  '';
}
