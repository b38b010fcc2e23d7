# The claim service: lets the owner of a fresh node authorize an operator SSH key with a wallet
# signature (SIWE, EIP-4361). Runs only while the node has an owner address and has not been
# claimed; the claim port is opened only while claiming is enabled. See docs/wallet.md for the
# protocol and its threat model (plain HTTP; the signature binds the SSH key and the host key).
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.xnode.claim;
  stateDir = "/var/lib/xnode/claim";
  keysDir = "/var/lib/xnode/ssh/authorized_keys.d";
  # Written by root's installer once a key is in; the service cannot write /var/lib/xnode/ssh.
  marker = "/var/lib/xnode/ssh/claimed";
  user = "xnode-claim";
  claimBin = "${config.xnode.package}/bin/xnode-claim";
  args = [
    "serve"
    "--handoff"
    "--listen" cfg.listenAddress
    "--port" (toString cfg.port)
    "--chain-id" (toString cfg.chainId)
    "--state-dir" stateDir
    "--authorized-keys" "${keysDir}/root"
    "--host-key" cfg.hostKey
    "--node-name" config.networking.hostName
  ]
  ++ lib.optional cfg.exitAfterClaim "--exit-after-claim"
  ++ lib.concatMap (d: [ "--domain" d ]) cfg.domains;
in
{
  options.xnode.claim = {
    enable = mkOption {
      type = types.bool;
      default = config.xnode.owner.address != null && config.xnode.owner.sshKeys == [ ];
      defaultText = lib.literalExpression
        ''config.xnode.owner.address != null && config.xnode.owner.sshKeys == [ ]'';
      description = ''
        Run the claim service (and open its port) so the owner can authorize an operator SSH key
        with `xnodectl claim HOST --wallet W --ssh-key KEY.pub`. On by default for a node built
        with an owner address and no SSH key. Once claimed, the service no longer starts
        (`${stateDir}/claimed` exists); set this to false in the node's configuration afterwards
        to close the firewall port as well.
      '';
    };
    port = mkOption {
      type = types.port;
      default = 8740;
      description = "TCP port of the claim service (plain HTTP; the SIWE signature is the security).";
    };
    listenAddress = mkOption {
      type = types.str;
      default = "0.0.0.0";
      example = "::";
      description = "Address the claim service binds to.";
    };
    chainId = mkOption {
      type = types.ints.unsigned;
      default = 1;
      description = "EIP-155 chain id a claim message must carry (`xnodectl claim --chain-id`).";
    };
    domains = mkOption {
      type = types.listOf (types.strMatching "[]A-Za-z0-9.:[-]+");
      default = [ ];
      example = [ "node1.example.org:8740" "203.0.113.7:8740" ];
      description = ''
        Extra host:port names the operator may use to reach the claim service, e.g. a public
        address in front of NAT. The address a connection actually arrived on is always accepted;
        the SIWE domain and URI must name one of these.
      '';
    };
    hostKey = mkOption {
      type = types.str;
      default = "/etc/ssh/ssh_host_ed25519_key.pub";
      description = "The SSH host public key the node announces and the owner's signature names.";
    };
    exitAfterClaim = mkOption {
      type = types.bool;
      default = true;
      description = "Stop the service (closing the socket) right after a successful claim.";
    };
  };

  config = lib.mkMerge [
    {
      # Keys authorized by the claim live outside the Nix store, root-only, one file per user.
      # nixpkgs nixos/modules/services/networking/ssh/sshd.nix (services.openssh.authorizedKeysFiles;
      # NixOS keeps its own defaults next to it)
      services.openssh.authorizedKeysFiles = [ "${keysDir}/%u" ];
      # nixpkgs nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules)
      systemd.tmpfiles.rules = [
        "d /var/lib/xnode/ssh 0700 root root -"
        "d ${keysDir} 0700 root root -"
      ];
    }
    (mkIf cfg.enable {
      # nixpkgs nixos/modules/config/users-groups.nix (users.users.<name>.isSystemUser, group)
      users.users.${user} = { isSystemUser = true; group = user; };
      users.groups.${user} = { };
      # The service's own directory: it writes the claimed flag and hands the key over here.
      systemd.tmpfiles.rules = [ "d ${stateDir} 0700 ${user} ${user} -" ];

      # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.services.<name>: wantedBy, after,
      # unitConfig, serviceConfig); conditions: systemd.unit(5) ConditionPathExists, all must hold.
      systemd.services.xnode-claim = {
        description = "Xnode claim service (SIWE owner sign-in authorizes an SSH key)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" "sshd.service" "sshd-keygen.service" "systemd-tmpfiles-setup.service" ];
        unitConfig.ConditionPathExists = [ "/etc/xnode/owner-address" "!${stateDir}/claimed" "!${marker}" ];
        serviceConfig = import ./lib/service-hardening.nix // {
          ExecStart = lib.escapeShellArgs ([ claimBin ] ++ args);
          # Not root: it faces the network. It writes only its own directory; root's installer
          # below appends the approved key to root's authorized_keys.
          User = user;
          Group = user;
          ReadWritePaths = [ stateDir ];
          UMask = "0077";
        };
      };
      # systemd.path(5): PathExists starts the unit when the file appears (and again while it
      # exists after the unit ran). nixpkgs nixos/modules/system/boot/systemd.nix (systemd.paths).
      systemd.paths.xnode-claim-install = {
        description = "Install the SSH key the claim service approved";
        wantedBy = [ "multi-user.target" ];
        pathConfig.PathExists = "${stateDir}/authorize.pub";
      };
      systemd.services.xnode-claim-install = {
        description = "Append the approved claim key to root's authorized_keys";
        serviceConfig = import ./lib/service-hardening.nix // {
          Type = "oneshot";
          Restart = "no";
          ExecStart = lib.escapeShellArgs [ claimBin "install" "--state-dir" stateDir
            "--authorized-keys" "${keysDir}/root" "--marker" marker ];
          ReadWritePaths = [ "/var/lib/xnode/ssh" stateDir ];
          UMask = "0077";
          RestrictAddressFamilies = [ "AF_UNIX" ];
          # Root, to reach into the service's 0700 directory (read the key, answer, clean up).
          CapabilityBoundingSet = [ "CAP_DAC_OVERRIDE" "CAP_DAC_READ_SEARCH" ];
        };
      };
      # nixpkgs nixos/modules/services/networking/firewall.nix (networking.firewall.allowedTCPPorts)
      networking.firewall.allowedTCPPorts = [ cfg.port ];
    })
  ];
}
