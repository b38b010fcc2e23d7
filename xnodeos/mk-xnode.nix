# mkXnode { name, system ? "x86_64-linux", owner ? null, sshKeys ? [ ], signedDeploys ? false,
#          storeKeys ? [ ], modules ? [ ] } -> a nixosSystem for one
# Xnode: every XnodeOS module (self.nixosModules.default), the node's name and owner, and the
# operator's own modules (hosts/<name>.nix, rendered apps/<name>/*.nix).
{ nixpkgs, self }:
{ name, system ? "x86_64-linux", owner ? null, sshKeys ? [ ], signedDeploys ? false, storeKeys ? [ ]
, modules ? [ ] }:
nixpkgs.lib.nixosSystem {
  modules = [
    self.nixosModules.default
    {
      # nixpkgs nixos/modules/misc/nixpkgs.nix
      nixpkgs.hostPlatform = system;
      # nixpkgs nixos/modules/tasks/network-interfaces.nix
      networking.hostName = name;
      xnode.package = self.packages.${system}.xnodectl;
      # Only when given: nullOr options refuse a null next to a value (identity.nix may set it).
      xnode.owner.address = nixpkgs.lib.mkIf (owner != null) owner;
      # The inventory's authorized_keys: every deployed system keeps the operator's access.
      xnode.owner.sshKeys = sshKeys;
      # modules/signed-deploys.nix: only owner-signed manifests activate on this node.
      xnode.requireSignedDeploys = signedDeploys;
      # modules/trust.nix: the owner's Nix store keys (inventory settings.store_keys).
      xnode.trust.storeKeys = storeKeys;
      # A node nobody can reach is a mistake: refuse it at build time (modules/owner.nix).
      xnode.owner.requireAccess = nixpkgs.lib.mkDefault true;
      # Record which xnodectl revision built the system (shown by nixos-version --json).
      # nixpkgs nixos/modules/misc/version.nix
      system.configurationRevision = self.rev or self.dirtyRev or null;
    }
  ] ++ modules;
}
