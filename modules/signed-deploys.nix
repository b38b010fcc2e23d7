# Owner-signed deploys: with xnode.requireSignedDeploys on, `xnode-activate begin` activates a
# system only if its deploy manifest (node, system, previous system, time, nonce) is signed by the
# owner's wallet; everything else is refused before the node changes (docs/deploy-protocol.md,
# "Signed deploys"). Accepted manifests are appended to an audit log on the node.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.xnode.signedDeploys;
  stateDir = "/var/lib/xnode/deploy/manifests";
  # xnode-activate splits this line on whitespace (no shell quoting): plain words only.
  verifier = lib.concatStringsSep " " [
    "${config.xnode.package}/bin/xnode-verify-manifest"
    "--state-dir" stateDir
    "--max-age" (toString cfg.maxAge)
    "--skew" (toString cfg.skew)
  ];
in
{
  options.xnode.requireSignedDeploys = mkOption {
    type = types.bool;
    default = false;
    description = ''
      Activate only systems whose deploy manifest is signed by xnode.owner.address
      (`xnodectl deploy` signs with the operator wallet when the inventory node has
      `signed_deploys = true`). Unsigned, wrongly signed, replayed and stale manifests are refused
      before anything changes; accepted ones are logged in ${stateDir}/audit.log.
    '';
  };
  options.xnode.signedDeploys = {
    maxAge = mkOption {
      type = types.ints.between 30 86400;
      default = 300;
      description = "Seconds a signed manifest stays valid after it was signed.";
    };
    skew = mkOption {
      type = types.ints.between 0 600;
      default = 60;
      description = "Seconds a manifest's time may lie in the future (clock differences).";
    };
  };

  config = mkIf config.xnode.requireSignedDeploys {
    assertions = [{
      # The verifier reads /etc/xnode/owner-address (modules/owner.nix, from xnode.owner.address).
      assertion = config.environment.etc ? "xnode/owner-address";
      message = "xnode.requireSignedDeploys needs xnode.owner.address: only the owner signs deploys.";
    }];
    # nixpkgs nixos/modules/system/etc/etc.nix (environment.etc.<name>.text)
    environment.etc."xnode/require-signed-deploys".text = "owner-signed manifests only\n";
    environment.etc."xnode/verify-manifest-cmd".text = verifier + "\n";
    # nixpkgs nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules)
    systemd.tmpfiles.rules = [
      "d ${stateDir} 0700 root root -"
      "d ${stateDir}/nonces 0700 root root -"
    ];
  };
}
