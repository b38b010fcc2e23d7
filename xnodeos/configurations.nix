# nixosConfigurations of this flake.
#
#   xnodeos            a generic Xnode (qemu-guest friendly, no owner): the base that
#                      `nixosConfigurations.xnodeos.config.system.build.images.{qemu-efi,raw-efi}`
#                      turn into disk images, and what the VM tests boot.
#   xnodeos-installer  the installer ISO for that generic node (config.system.build.isoImage).
#
# Real nodes are built with an owner: `xnodectl image build` (mk-image.nix) or a workspace's
# xnodectl.lib.mkXnode.
{ nixpkgs, self }:
let
  mkXnode = import ./mk-xnode.nix { inherit nixpkgs self; };

  xnodeos = mkXnode {
    name = "xnodeos";
    modules = [
      ({ modulesPath, ... }: {
        # virtio drivers and the QEMU guest agent; harmless on hardware.
        imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];
        # A template, not a node: its owner is baked in when an image is built for one.
        xnode.owner.requireAccess = false;
      })
    ];
  };
in
{
  inherit xnodeos;

  xnodeos-installer = import ./mk-installer.nix { inherit nixpkgs; } {
    node = xnodeos;
    baseName = "xnodeos";
  };
}
