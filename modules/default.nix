# All XnodeOS modules. A node imports this once (xnodectl.nixosModules.default); app modules
# rendered by xnodectl then only set options these modules declare.
{ lib, pkgs, ... }:
{
  imports = [
    ./base.nix # XnodeOS base: SSH by key only, firewall, generations, GC, journald, time
    ./owner.nix # owner identity: Ethereum address and authorized SSH keys
    ./apps.nix # xnode.apps: what rendered app modules declare (health, secrets, ports)
    ./proxy.nix # xnode.proxy: the node's reverse proxy for app web UIs
    ./deploy-agent.nix # node side of the deploy engine: activation helper and its lock
    ./claim.nix # SIWE claim service for a node that has an owner but no operator key yet
    ./wallet-gate.nix # wallet sign-in in front of app web UIs
    ./signed-deploys.nix # xnode.requireSignedDeploys: only owner-signed manifests activate
    ./trust.nix # xnode.trust: store paths from peers and caches only when owner-signed
  ];

  # nixpkgs nixos/modules/misc/extra-arguments.nix style option: the xnodectl package for node-side tools.
  options.xnode.package = lib.mkOption {
    type = lib.types.package;
    description = "The xnodectl package whose node-side programs (activation helper, claim and sign-in services, manifest verifier) the modules run. Set by xnodectl.lib.mkXnode.";
  };
}
