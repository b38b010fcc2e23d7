# The workspace's fleet as a nixops4 deployment (`xnodectl deploy --engine nixops4`).
#
# mkNixops4Deployments { nodes, configurations, nixops4, nixops4-nixos } -> { default = <module>; }
#   nodes           the inventory's `nodes` table (builtins.fromTOML of inventory.toml)
#   configurations  the workspace's nixosConfigurations (one per node, built by xnode.lib.mkXnode)
#   nixops4, nixops4-nixos   the two flakes, pinned together by the workspace (their API moves)
# `default` is a nixops4 deployment module in the current "members" shape (nixops4 ADR 008/009):
# use it as `outputs.nixops4 = nixops4.lib.mkRoot { modules = [ deployments.default ]; }`.
# Names follow nixops4-nixos (modules.nixops4Component.nixos; ssh.host, ssh.hostPublicKey,
# ssh.user, ssh.opts; nixpkgs; nixos.module) as of its 2026 main branch.
#
# What this path does NOT have (said in docs/deploy.md): two-phase activation, health probes,
# dead-man rollback, secret upload, JSON events. nixops4-nixos copies and runs `apply switch`.
{ nixpkgs, self }:
{ nodes
, configurations
, nixops4 ? null
, nixops4-nixos ? null
}:
let
  lib = nixpkgs.lib;
  need = name: value:
    if value == null then
      throw ("xnodectl: the nixops4 engine needs the '${name}' flake input; add "
        + "inputs.${name}.url to the workspace flake and pass it to mkNixops4Deployments")
    else value;
  # A node's NixOS modules, exactly as its nixosConfiguration was evaluated with (eval-config
  # records them in _module.args.modules), so both engines deploy the same system.
  modulesOf = name: configurations.${name}._module.args.modules;
  member = providers: name: node: {
    type = providers.local.exec;
    imports = [ (need "nixops4-nixos" nixops4-nixos).modules.nixops4Component.nixos ];
    inherit nixpkgs;
    nixos.module = { imports = modulesOf name; };
    ssh = {
      host = node.host;
      user = node.user or "root";
      # Pinned, never trust-on-first-use: nixops4-nixos requires the key.
      hostPublicKey =
        if node ? host_key then node.host_key
        else throw "xnodectl: node '${name}' has no pinned host_key in inventory.toml";
      opts = lib.optionalString ((node.port or 22) != 22) "-p ${toString node.port}";
    };
  };
in
{
  default = { providers, ... }: {
    providers.local = (need "nixops4" nixops4).modules.nixops4Provider.local;
    members = lib.mapAttrs (member providers) nodes;
  };
}
