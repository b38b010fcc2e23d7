# Every NixOS configuration xnodectl ships, evaluated with the stand-in module system
# (eval.nix): each golden render with the XnodeOS modules, the XnodeOS configurations
# (xnodeos/configurations.nix, via a stand-in `nixpkgs.lib.nixosSystem`), and every node of every
# VM test (vm-tests/*.nix, via a stand-in `pkgs.testers.runNixOSTest`).
# -> { "<target>" = { report; options; externalModules; config; }; } (select before --strict: not
# every config value is meant to be forced)
# extra: { <name> = [ module ... ]; } more targets, each evaluated with the XnodeOS modules.
{ schema ? { }, discover ? false, only ? null, extra ? { } }:
let
  b = builtins;
  root = ../..;
  lib = import ./lib.nix;
  pkgs0 = import ./pkgs.nix { inherit lib; };
  evalModules = args: import ./eval.nix { inherit lib pkgs; } ({ inherit schema discover; } // args);
  nixosSystem = { modules, specialArgs ? { }, ... }: evalModules { inherit modules specialArgs; };
  lib' = lib // { inherit nixosSystem; };
  pkgs = pkgs0 // { lib = lib'; };
  nixpkgs = { lib = lib'; outPath = "/stand-in/nixpkgs"; legacyPackages.x86_64-linux = pkgs; };
  goldens = b.attrNames (lib.filterAttrs (_: k: k == "directory") (b.readDir (root + "/tests/golden")));
  self = {
    outPath = toString root;
    inputs = { inherit nixpkgs; };
    nixosModules = { default = root + "/modules"; } // lib.genAttrs goldens (n: root + "/tests/golden/${n}/defaults.nix");
    packages.x86_64-linux = { xnodectl = pkgs.standInPackage "xnodectl"; default = pkgs.standInPackage "xnodectl"; };
    lib.mkXnode = import (root + "/xnodeos/mk-xnode.nix") { inherit nixpkgs self; };
  };

  golden = lib.concatMap (name: map (variant: {
    name = "golden/${name}/${variant}";
    value = evalModules { modules = [ (root + "/modules") (root + "/tests/golden/${name}/${variant}.nix") ]; };
  }) [ "defaults" "example" ]) goldens;

  configurations = lib.mapAttrsToList (name: sys: { name = "xnodeos/${name}"; value = sys; })
    (import (root + "/xnodeos/configurations.nix") { inherit nixpkgs self; });

  vmFiles = b.filter (f: lib.hasSuffix ".nix" f)
    (b.attrNames (lib.filterAttrs (_: k: k == "regular") (b.readDir (root + "/vm-tests"))));
  vmTest = file:
    let
      test = (import (root + "/vm-tests/${file}") { inherit pkgs self; }).test;
      nodes = b.mapAttrs (name: m: (evalNode name m).config) test.nodes;
      evalNode = name: m: evalModules { modules = [ m ]; specialArgs = { inherit nodes name; }; };
    in
    lib.mapAttrsToList (name: m: { name = "vm-tests/${lib.removeSuffix ".nix" file}/${name}"; value = evalNode name m; }) test.nodes;
  vm = lib.concatMap vmTest vmFiles;

  extras = lib.mapAttrsToList (name: mods: {
    name = "extra/${name}";
    value = evalModules { modules = [ (root + "/modules") ] ++ mods; };
  }) extra;

  all = b.listToAttrs (golden ++ configurations ++ vm ++ extras);
in
b.mapAttrs (_: e: { inherit (e) report options externalModules config; })
  (if only == null then all else lib.filterAttrs (n: _: lib.hasPrefix only n) all)
