{
  description = "xnodectl: declarative NixOS provisioning for Xnodes (templates, atomic fleet deploys, XnodeOS images, wallet identity)";

  # Pinned in flake.lock; see README "Pinned inputs" for why this release.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs, ... }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # Every app template's golden renders (defaults / example) are plain NixOS modules,
      # kept byte-identical to what `xnodectl render` writes by tests/test_templates.py.
      templateNames = builtins.attrNames
        (lib.filterAttrs (_: kind: kind == "directory") (builtins.readDir ./templates));
      goldenModule = name: variant: ./tests/golden + "/${name}/${variant}.nix";

      # vm-tests/<name>.nix -> checks.<system>.<name>; each file is `{ pkgs, self }: runNixOSTest {...}`.
      # The package's own sources only: a change to docs, tests or VM tests neither rebuilds the
      # package nor changes any node's system (the flake input itself is git+file: of a checkout,
      # the tracked files; see xnodectl/workspace.py default_flake).
      packageSource = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.unions [ ./pyproject.toml ./README.md ./xnodectl ./templates ];
      };

      vmTests = pkgs:
        lib.mapAttrs'
          (file: _: lib.nameValuePair (lib.removeSuffix ".nix" file)
            (import (./vm-tests + "/${file}") { inherit pkgs self; }))
          (lib.filterAttrs (file: kind: kind == "regular" && lib.hasSuffix ".nix" file)
            (builtins.readDir ./vm-tests));
    in
    {
      # Shared XnodeOS modules (base, owner identity, apps, reverse proxy, deploy agent, claim,
      # wallet gate, signed deploys) and one module per template (its defaults render).
      nixosModules = {
        default = ./modules;
      } // lib.genAttrs templateNames (name: goldenModule name "defaults");

      lib = {
        # mkXnode { name, system, owner ? null, modules ? [ ] } -> a nixosSystem for one node.
        mkXnode = import ./xnodeos/mk-xnode.nix { inherit nixpkgs self; };
        # The same fleet as nixops4 deployments (see xnodeos/nixops4.nix).
        mkNixops4Deployments = import ./xnodeos/nixops4.nix { inherit nixpkgs self; };
        # mkXnodeImage { ... } -> qcow2/raw images of a node (see xnodeos/mk-image.nix).
        mkXnodeImage = import ./xnodeos/mk-image.nix { inherit nixpkgs self; };
      };

      nixosConfigurations = import ./xnodeos/configurations.nix { inherit nixpkgs self; };

      packages = forAllSystems (system: pkgs: rec {
        xnodectl = pkgs.callPackage ./package.nix { src = packageSource; };
        default = xnodectl;
      } // lib.optionalAttrs (system == "x86_64-linux") {
        # Generic XnodeOS images (no owner baked in: `xnodectl image build` makes owned ones).
        xnodeos-iso = self.nixosConfigurations.xnodeos-installer.config.system.build.isoImage;
        xnodeos-qcow2 = self.nixosConfigurations.xnodeos.config.system.build.images.qemu-efi;
        xnodeos-raw = self.nixosConfigurations.xnodeos.config.system.build.images.raw-efi;
      });

      apps = forAllSystems (system: pkgs: {
        default = { type = "app"; program = "${self.packages.${system}.xnodectl}/bin/xnodectl"; };
      });

      checks = forAllSystems (system: pkgs:
        lib.optionalAttrs (system == "x86_64-linux") (vmTests pkgs) // {
          xnodectl = self.packages.${system}.xnodectl;
        });

      devShells = forAllSystems (system: pkgs: {
        default = pkgs.mkShell {
          packages = [ pkgs.python3 pkgs.nix pkgs.openssh pkgs.git pkgs.ruff pkgs.mypy ];
        };
      });

      # nixfmt-rfc-style is an alias of nixfmt in the pinned release.
      formatter = forAllSystems (system: pkgs: pkgs.nixfmt);
    };
}
