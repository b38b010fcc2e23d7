# Store trust: the node accepts store paths from peers and caches only when they are signed by the
# workspace owner's Nix key (xnode.trust.storeKeys, from inventory.toml settings.store_keys) or by
# the official NixOS cache. This is what makes `xnodectl deploy --fan-out` and `--via` safe: a peer
# or a cache can serve bytes, never decide what the node runs (docs/deploy.md, "Fan-out").
# The operator's own copy (root over pinned SSH) needs no signature; it is signed all the same.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf mkForce types optional concatStringsSep;
  cfg = config.xnode.trust;
  # nixpkgs nixos/modules/config/nix.nix adds this key and substituter to every system (list
  # merge); officialCache = false needs mkForce to take them out.
  officialKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
  officialCache = "https://cache.nixos.org/";
  keys = cfg.storeKeys ++ optional cfg.officialCache officialKey;
  substituters = cfg.substituters ++ optional cfg.officialCache officialCache;
  force = v: if cfg.officialCache then v else mkForce v;
in
{
  options.xnode.trust = {
    storeKeys = mkOption {
      type = types.listOf (types.strMatching "[A-Za-z0-9._+-]+:[A-Za-z0-9+/]{43}=");
      default = [ ];
      description = ''
        Public Nix signing keys ("name:base64") of the workspace owner, newest first. Paths
        copied from peers and substituted from caches must carry a signature by one of them (or
        by the official cache, see officialCache). Set by mkXnode from the inventory.
      '';
    };
    officialCache = mkOption {
      type = types.bool;
      default = true;
      description = "Also trust (and substitute from) cache.nixos.org.";
    };
    substituters = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "s3://xnode-cache?region=eu-west-1" "file:///mnt/cache" ];
      description = ''
        Binary caches the node substitutes from (`xnodectl deploy --via URL` pushes to one of
        them). Their paths are still checked against storeKeys.
      '';
    };
    servePeers = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Let peers read this node's store during a fan-out deploy: sshd also reads
        /run/xnode/fanout/keys/<user>, where the engine puts one short-lived key per deploy,
        restricted to the read-only `nix-store --serve` command and to the deploy's duration.
      '';
    };
  };

  config = {
    # nixpkgs nixos/modules/config/nix.nix: nix.settings.{require-sigs,trusted-public-keys,
    # substituters} (listOf str / bool).
    nix.settings.require-sigs = true;
    nix.settings.trusted-public-keys = force keys;
    nix.settings.substituters = force substituters;
    # Read by `xnodectl store-key signers` to name the keys it sees.
    environment.etc."xnode/store-keys".text = concatStringsSep "\n" cfg.storeKeys + "\n";
    # nixpkgs nixos/modules/services/networking/ssh/sshd.nix (services.openssh.authorizedKeysFiles)
    services.openssh.authorizedKeysFiles = mkIf cfg.servePeers [ "/run/xnode/fanout/keys/%u" ];
    # nixpkgs nixos/modules/system/boot/systemd/tmpfiles.nix; sshd wants root-owned dirs.
    systemd.tmpfiles.rules = mkIf cfg.servePeers [
      "d /run/xnode/fanout 0700 root root -"
      "d /run/xnode/fanout/keys 0755 root root -"
    ];
  };
}
