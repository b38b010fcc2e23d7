# Node side of the deploy engine: the `xnode-activate` helper (docs/deploy-protocol.md), its state
# directory and the node facts it reads from /etc/xnode.
#
# The helper is built here from xnodectl/data/node/xnode-activate with writeShellApplication, not
# taken from config.xnode.package: a node then carries a small bash closure (coreutils, util-linux,
# curl, nix, systemd) instead of the operator CLI's Python closure, and the helper's runtime tools
# are pinned rather than found on PATH.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkIf mkOption types;
  cfg = config.xnode.deployAgent;

  # nixpkgs pkgs/build-support/trivial-builders/default.nix (writeShellApplication: runtimeInputs,
  # bashOptions, inheritPath)
  helper = pkgs.writeShellApplication {
    name = "xnode-activate";
    text = builtins.readFile ../xnodectl/data/node/xnode-activate;
    runtimeInputs = [
      pkgs.coreutils
      pkgs.gnugrep
      pkgs.gawk
      pkgs.util-linux # setsid
      pkgs.curl # http probes
      pkgs.jq # probe list parsing (python3 or nix eval otherwise)
      config.nix.package # nix-env, nix-store; nixpkgs nixos/modules/services/system/nix-daemon.nix
      config.systemd.package # systemd-run, systemctl; nixpkgs nixos/modules/system/boot/systemd.nix
    ];
    # The script checks every step itself and reports failures as JSON; errexit would end it
    # before it can say what went wrong.
    bashOptions = [ "nounset" "pipefail" ];
    # A verifier named in /etc/xnode/verify-manifest-cmd is looked up on the system PATH.
    inheritPath = true;
  };
in
{
  options.xnode.deployAgent = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether this node accepts two-phase deploys from xnodectl: installs `xnode-activate`,
        which runs activations detached from the SSH session, with a dead-man timer that rolls
        back to the previous generation unless the operator confirms over a new connection.
      '';
    };
    confirmTimeout = mkOption {
      type = types.ints.between 5 3600;
      default = 30;
      description = ''
        Seconds after an activation ended within which the operator must confirm it (over a new
        SSH connection, after health probes pass); otherwise the node re-activates its previous
        system. Used when the operator does not pass `--confirm-timeout` itself.
      '';
    };
    lockStaleAfter = mkOption {
      type = types.ints.positive;
      default = 900;
      description = ''
        Seconds without a heartbeat after which another operator may take over this node's deploy
        lock (a deploy whose operator vanished). Longer than any deploy's copy + activation.
      '';
    };
    package = mkOption {
      type = types.package;
      default = helper;
      defaultText = lib.literalExpression "xnode-activate built from xnodectl/data/node";
      description = "The `xnode-activate` program (a package with `bin/xnode-activate`).";
    };
  };

  config = mkIf cfg.enable {
    # nixpkgs nixos/modules/config/system-path.nix (environment.systemPackages): on root's PATH
    # over SSH as /run/current-system/sw/bin/xnode-activate.
    environment.systemPackages = [ cfg.package ];

    # nixpkgs nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules). The deploy
    # state holds manifests and logs: root only. (/var/lib/xnode/secrets is modules/apps.nix's.)
    systemd.tmpfiles.rules = [
      "d /var/lib/xnode 0755 root root -"
      "d /var/lib/xnode/deploy 0700 root root -"
      # GC roots of pending deploys (rollback target, copied closure): docs/deploy-protocol.md
      "d /nix/var/nix/gcroots/xnode-deploy 0755 root root -"
    ];

    # A pending deploy's decision is completed by whoever comes next; at boot and every 30 s that
    # is this unit, so a node nobody contacts still settles (its supervisor died, it rebooted).
    # nixpkgs nixos/lib/systemd-unit-options.nix (serviceConfig, startAt is not used: a timer
    # with OnUnitActiveSec runs relative to the last run, on the monotonic clock).
    systemd.services.xnode-deploy-recover = {
      description = "Complete a pending xnode deploy decision";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" "nix-daemon.socket" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/xnode-activate recover";
      };
    };
    systemd.timers.xnode-deploy-recover = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "30s";
        OnUnitActiveSec = "30s";
        AccuracySec = "1s";
      };
    };

    # nixpkgs nixos/modules/system/etc/etc.nix (environment.etc.<name>.text);
    # networking.hostName: nixpkgs nixos/modules/tasks/network-interfaces.nix
    environment.etc."xnode/node-name".text = config.networking.hostName + "\n";
    environment.etc."xnode/deploy-confirm-timeout".text = toString cfg.confirmTimeout + "\n";
    environment.etc."xnode/deploy-lock-stale-after".text = toString cfg.lockStaleAfter + "\n";
  };
}
