# Regenerates the facts in this directory from a nixpkgs: by default the flake's own pinned input
# (so CI, with a current Nix, checks the facts against exactly what `nix flake check` builds).
#
#   nix eval --impure --json --expr 'import ./facts/generate.nix { }' > generated.json
#   python3 facts/compare.py generated.json          # differences, exit 1 if any
#   python3 facts/compare.py generated.json --write  # take them
#
# What it reads, for every entry already in the files (the entries say WHAT to look up; this
# says what the pin says about them):
#   nixos-options.json   each option's type in one normal form (see that file's "about"),
#                        readOnly, and the default where an entry records one;
#   python-packages.json python3Packages.<attr>.version;
#   nixpkgs.json         lib/minver.nix, and whether each recorded alias is still an alias.
{ flake ? builtins.getFlake (toString ./..)
, nixpkgs ? flake.inputs.nixpkgs
, system ? "x86_64-linux"
}:
let
  b = builtins;
  lib = nixpkgs.lib;
  here = f: b.fromJSON (b.readFile (./. + "/${f}"));
  optionsFacts = here "nixos-options.json";
  pythonFacts = here "python-packages.json";
  nixpkgsFacts = here "nixpkgs.json";
  pkgs = import nixpkgs { inherit system; };
  pkgsNoAliases = import nixpkgs { inherit system; config.allowAliases = false; };

  # Every option xnodectl sets lives in the default module list, qemu-vm.nix (VM tests) or
  # iso-image.nix (the installer); their options are declared together here (only `options` is
  # read, so their config never has to agree).
  eval = lib.nixosSystem {
    modules = [
      { nixpkgs.hostPlatform = system; }
      (nixpkgs + "/nixos/modules/virtualisation/qemu-vm.nix")
      (nixpkgs + "/nixos/modules/installer/cd-dvd/iso-image.nix")
    ];
  };

  inherit (import ./types.nix lib) typeJson find;
  optionFact = path: entry:
    let
      opt = find eval.options [ ] (lib.splitString "." path);
    in
    { type = typeJson opt.type; }
    // lib.optionalAttrs (entry ? default) { default = opt.default; }
    // lib.optionalAttrs (opt.readOnly or false) { readOnly = true; };
in
{
  options = b.mapAttrs optionFact optionsFacts.options;
  python = b.mapAttrs (_: e: pkgs.python3Packages.${e.attr}.version) pythonFacts.packages;
  minimumNixVersion = import (nixpkgs + "/lib/minver.nix");
  aliases = b.listToAttrs (map (a: { name = a; value = (pkgs ? ${a}) && !(pkgsNoAliases ? ${a}); })
    (b.attrNames nixpkgsFacts.aliases));
  nixosRelease = lib.trivial.release;
}
