# The installer ISO for one node: a live system that runs xnode-install.service (installer.nix) and
# carries the node's whole system closure in its squashfs, so installing needs no network.
#
# Built on nixpkgs nixos/modules/installer/cd-dvd/iso-image.nix directly, not on the
# installation-device profile: that profile gives root and `nixos` empty passwords and starts
# sshd with PermitRootLogin=yes, which an unattended installer has no use for.
{ nixpkgs }:
{ node, baseName, install ? { } }:
let
  system = node.config.nixpkgs.hostPlatform.system;
in
nixpkgs.lib.nixosSystem {
  modules = [
    ({ lib, modulesPath, ... }: {
      imports = [
        (modulesPath + "/installer/cd-dvd/iso-image.nix")
        # Kernel modules for whatever machine the stick is plugged into.
        (modulesPath + "/profiles/all-hardware.nix")
        ./installer.nix
      ];

      # nixpkgs nixos/modules/misc/nixpkgs.nix
      nixpkgs.hostPlatform = system;
      # nixpkgs nixos/modules/misc/version.nix
      system.stateVersion = node.config.system.stateVersion;

      xnode.installer = install // {
        toplevel = node.config.system.build.toplevel;
        # The partitions the node mounts by (modules/base.nix).
        inherit (node.config.xnode.base) partUuids;
      };

      # nixpkgs nixos/modules/installer/cd-dvd/iso-image.nix
      isoImage = {
        # Embedded closure: nixos-install copies it from the live store.
        storeContents = [ node.config.system.build.toplevel ];
        makeEfiBootable = true;
        makeUsbBootable = true; # isohybrid: dd onto a USB stick works
        volumeID = "XNODEOS";
        squashfsCompression = "zstd -Xcompression-level 6";
        appendToMenuLabel = " XnodeOS installer";
      };
      # iso-image.nix sets image.baseName itself; nixpkgs nixos/modules/image/file-options.nix
      image.baseName = lib.mkForce "${baseName}-installer";
      boot.loader.timeout = lib.mkForce 3;

      # Nobody logs in to the installer: root is locked, no sshd, no getty autologin. The console
      # shows the installer's progress (StandardOutput=journal+console).
      # nixpkgs nixos/modules/config/users-groups.nix
      users.mutableUsers = false;
      users.users.root.hashedPassword = "!";
      # Nobody is meant to log in, so NixOS's lock-out assertion is acknowledged here.
      users.allowNoPasswordLogin = true;
      services.openssh.enable = false;
      networking.hostName = "xnodeos-installer";
      networking.firewall.enable = true;
      # nixpkgs nixos/modules/config/nix.nix
      nix.settings.experimental-features = [ "nix-command" "flakes" ];
      nix.settings.substituters = lib.mkForce [ ];
      documentation.enable = false;
    })
  ];
}
