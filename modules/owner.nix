# Owner identity: the node's Ethereum owner and the SSH keys that may log in as root.
#
# No owner and no keys means no remote access at all: sshd runs but has nothing to accept, and
# this module opens nothing else. A node with an owner but no key is reachable only through the
# claim flow (modules/claim.nix), where the owner proves the address with a wallet signature.
# Never an open API: unlike Openmesh's XnodeOS, an unowned node serves nothing unauthenticated.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.xnode.owner;

  # One authorized_keys line: optional options are not allowed here (no `command=`/`from=`
  # smuggled in through a comment), only "<type> <base64> [comment]".
  keyTypes = [
    "ssh-ed25519" "ecdsa-sha2-nistp256" "ecdsa-sha2-nistp384" "ecdsa-sha2-nistp521" "ssh-rsa"
    "sk-ssh-ed25519@openssh.com" "sk-ecdsa-sha2-nistp256@openssh.com"
  ];
  keyPattern = "(${lib.concatMapStringsSep "|" lib.escapeRegex keyTypes}) [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?";
  isPrivate = key: lib.hasInfix "PRIVATE KEY" key;
in
{
  options.xnode.owner = {
    address = mkOption {
      type = types.nullOr (types.strMatching "0x[0-9a-fA-F]{40}");
      default = null;
      example = "0x52908400098527886E0F7030069857D2E4169EE7";
      description = ''
        Ethereum address that owns this node (EIP-55 checksummed by xnodectl). Published as
        /etc/xnode/owner-address; the claim and wallet sign-in services accept signatures from
        this address only.
      '';
    };
    sshKeys = mkOption {
      type = types.listOf (types.strMatching keyPattern);
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx... operator@laptop" ];
      description = ''
        SSH public keys allowed to log in as root (the operator's keys; xnodectl deploys over
        this channel). Plain "<type> <base64> [comment]" lines, without authorized_keys options.
      '';
    };
    requireAccess = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Refuse to build a node that has neither an owner address nor an SSH key (such a node
        could only ever be reached at its console). xnodectl.lib.mkXnode turns this on for every
        node it builds; generic base configurations and test VMs that import the modules
        directly leave it off.
      '';
    };
    allowUnreachable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Acknowledge that this configuration may have neither an owner nor a key (generic base
        configurations, VM tests). Overrides requireAccess.
      '';
    };
  };

  config = {
    assertions = [
      {
        assertion = cfg.requireAccess && !cfg.allowUnreachable -> cfg.address != null || cfg.sshKeys != [ ];
        message = ''
          xnode.owner: this node has no owner address and no SSH key, so nobody could ever log in
          or claim it. Set xnode.owner.address (the owner's Ethereum address) and/or
          xnode.owner.sshKeys, e.g. with `xnodectl image build --owner 0x... --ssh-key KEY.pub`.
        '';
      }
      {
        assertion = !(lib.any isPrivate cfg.sshKeys);
        message = ''
          xnode.owner.sshKeys contains a PRIVATE key. Give the public key (the .pub file) and
          treat the private key as leaked: it is now in the world-readable Nix store.
        '';
      }
    ];

    # nixpkgs nixos/modules/services/networking/ssh/sshd.nix (users.users.<name>.openssh.authorizedKeys)
    users.users.root.openssh.authorizedKeys.keys = cfg.sshKeys;
    # NixOS's own lock-out assertion wants a root password or key. A node that has only an owner
    # gets its operator key through the claim flow at runtime, and the first assertion above
    # already refuses a node nobody could reach; root's password stays locked either way.
    # nixpkgs nixos/modules/config/users-groups.nix
    users.allowNoPasswordLogin = lib.mkDefault (cfg.sshKeys == [ ]);

    # The address is public information; the file lets node-side tools and humans see the owner.
    # nixpkgs nixos/modules/system/etc/etc.nix
    environment.etc."xnode/owner-address" = lib.mkIf (cfg.address != null) {
      text = cfg.address + "\n";
      mode = "0444";
    };
  };
}
