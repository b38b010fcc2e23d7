# mkXnodeImage { name, system, format, modules, install } -> the image derivation of one node.
#
#   format = "iso"   : the installer ISO (installer-iso.nix) embedding this node's system closure
#   format = "qcow2" : a bootable UEFI disk image of the node  (system.build.images.qemu-efi)
#   format = "raw"   : the same as a raw disk image            (system.build.images.raw-efi)
#
# Disk images come from NixOS's own image framework (nixpkgs nixos/modules/image/images.nix:
# image.modules.<variant> is extendModules'd onto the node; variants qemu-efi and raw-efi import
# nixos/modules/virtualisation/disk-image.nix). `xnodectl image build` calls this from the small
# flake it generates; `modules` carries that flake's identity.nix.
{ nixpkgs, self }:
{ name, system ? "x86_64-linux", format ? "iso", modules ? [ ], install ? { } }:
let
  lib = nixpkgs.lib;
  mkXnode = import ./mk-xnode.nix { inherit nixpkgs self; };
  baseName = "xnodeos-${name}";

  node = mkXnode {
    inherit name system;
    modules = modules ++ [
      {
        # Per-variant settings go in image.modules.<variant> (options only the image module
        # declares); nixpkgs nixos/modules/image/file-options.nix (image.baseName).
        image.modules = lib.genAttrs [ "qemu-efi" "raw-efi" ] (_: {
          image.baseName = lib.mkForce baseName;
        });
      }
    ];
  };

  installer = import ./mk-installer.nix { inherit nixpkgs; } {
    inherit node baseName install;
  };

  images = {
    iso = installer.config.system.build.isoImage;
    qcow2 = node.config.system.build.images.qemu-efi;
    raw = node.config.system.build.images.raw-efi;
  };
in
images.${format} or (throw "mkXnodeImage: format '${format}' is not one of iso, qcow2, raw")
