# VM test of the XnodeOS installer (xnodeos/installer.nix, the service the installer ISO runs):
#   - refuses while two empty disks qualify, and never touches a disk holding data or the disk it
#     runs from;
#   - with one empty disk: partitions it from the declared layout, installs the embedded XnodeOS
#     closure with nixos-install (the VM has no network to fetch anything);
#   - the installed disk boots on its own (UEFI, systemd-boot) into XnodeOS with the baked-in
#     owner, and is reachable over SSH from another VM with the owner's key;
#   - the installer run again on the installed machine refuses to wipe it.
# Like nixpkgs' own installer tests (nixos/tests/installer.nix), the installer runs in a test VM
# rather than from the ISO, and a second node boots the installed disk image.
{ pkgs, self }:
let
  lib = pkgs.lib;
  system = pkgs.stdenv.hostPlatform.system;
  keys = import (pkgs.path + "/nixos/tests/ssh-keys.nix") pkgs;
  owner = "0x52908400098527886E0F7030069857D2E4169EE7";
  address = "192.168.1.200";

  # The system the installer installs: an XnodeOS node built by xnodectl.lib.mkXnode, plus what a
  # test VM needs to be driven (the test backdoor) and a fixed address on the test network.
  installed = self.lib.mkXnode {
    name = "installed";
    inherit system owner;
    modules = [
      ({ modulesPath, ... }: {
        imports = [
          (modulesPath + "/testing/test-instrumentation.nix")
          (modulesPath + "/profiles/qemu-guest.nix")
        ];
        xnode.owner.sshKeys = [ keys.snakeOilPublicKey ];
        # The test network's NIC of node `target`: the driver gives it the MAC
        # 52:54:00:12:<vlan>:<node number> (nixpkgs nixos/lib/qemu-common.nix qemuNicMac; node
        # numbers count the sorted node names: client 1, installer 2, target 3). Named by MAC,
        # as the driver's own udev rules do, so the kernel's probe order cannot swap it.
        # nixpkgs nixos/modules/services/hardware/udev.nix (services.udev.extraRules)
        services.udev.extraRules = ''
          SUBSYSTEM=="net", ACTION=="add", ATTR{address}=="52:54:00:12:01:03", NAME="testlan"
        '';
        # nixpkgs nixos/modules/tasks/network-interfaces.nix
        networking.interfaces.testlan.ipv4.addresses = [ { inherit address; prefixLength = 24; } ];
      })
    ];
  };
  toplevel = installed.config.system.build.toplevel;

  # The installer ISO of the same node (xnodeos/mk-installer.nix). Building it (a squashfs of the
  # whole closure) is left to packages.xnodeos-iso; recording its derivation path in the installer
  # VM makes every run of this test evaluate the complete ISO configuration at no build cost.
  isoDrv = builtins.unsafeDiscardStringContext
    (import ../xnodeos/mk-installer.nix { inherit (self.inputs) nixpkgs; } {
      node = installed;
      baseName = "xnodeos-installed";
    }).config.system.build.isoImage.drvPath;

  # Both nodes use the same primary disk file: the installer writes it, the target boots it.
  # Relative paths resolve in each node's own state directory; one level up is the driver's
  # directory, which both nodes share.
  disk = "../xnode-target.qcow2";
in
pkgs.testers.runNixOSTest {
  name = "xnodeos-installer";
  globalTimeout = 2400;

  nodes = {
    installer = {
      imports = [ ../xnodeos/installer.nix ];
      xnode.installer = {
        inherit toplevel;
        afterInstall = "none";
        autoStart = false; # the test starts it after adding a second disk
        minDiskGiB = 3;
        espSizeMiB = 256;
      };
      # nixpkgs nixos/modules/virtualisation/qemu-vm.nix: the installer's own root lives on the
      # first extra disk (vdb, 1 GiB); the primary disk (vda, 6 GiB) starts empty and becomes the
      # target; vdc (4 GiB, empty) is a second candidate that makes the choice ambiguous.
      virtualisation.diskImage = disk;
      virtualisation.diskSize = 6144;
      virtualisation.emptyDiskImages = [ 1024 4096 ];
      virtualisation.rootDevice = "/dev/vdb";
      virtualisation.fileSystems."/".autoFormat = true;
      # nixos-install copies the embedded closure out of this store; registering the store paths
      # at boot needs it writable.
      virtualisation.writableStore = true;
      virtualisation.useEFIBoot = true;
      virtualisation.memorySize = 2048;
      nix.settings.substituters = lib.mkForce [ ];
      environment.etc."xnode-installer-iso.drv".text = isoDrv;
    };

    target = {
      virtualisation.diskImage = disk;
      virtualisation.useBootLoader = true;
      virtualisation.useEFIBoot = true;
      virtualisation.useDefaultFilesystems = false;
      virtualisation.efi.keepVariables = false;
      # Never mounted: the installed system on the disk brings its own configuration.
      virtualisation.fileSystems."/" = {
        device = "/dev/disk/by-label/this-is-not-real-and-will-never-be-used";
        fsType = "ext4";
      };
      virtualisation.memorySize = 1536;
    };

    client = { pkgs, ... }: {
      environment.systemPackages = [ pkgs.openssh ];
    };
  };

  testScript = ''
    installer.start()
    installer.wait_for_unit("multi-user.target")
    installer.succeed("udevadm settle")
    installer.succeed("grep -qE '^/nix/store/.+\\.drv$' /etc/xnode-installer-iso.drv")

    def install():
        installer.succeed("rm -f /run/xnode-install/refused")
        # restart: the unit is a RemainAfterExit oneshot, so a plain start would not run it again
        return installer.execute("systemctl restart xnode-install.service")[0]

    with subtest("two empty disks: the installer refuses and writes nothing"):
        # vda (6 GiB) and vdc (4 GiB) are empty and qualify; vdb is the installer's own root.
        assert install() != 0
        reason = installer.succeed("cat /run/xnode-install/refused")
        assert "several empty disks" in reason, reason
        installer.succeed("test -z \"$(wipefs --noheadings /dev/vda)\"")
        installer.succeed("test -z \"$(wipefs --noheadings /dev/vdc)\"")
        installer.succeed("journalctl -u xnode-install.service | grep -q '/dev/vdb is the medium'")

    with subtest("a disk holding data is never chosen"):
        installer.succeed("mkfs.ext4 -q -L keep /dev/vdc")
        assert install() == 0, installer.succeed("journalctl -u xnode-install.service")
        installer.succeed("test -e /run/xnode-install/done")
        installer.succeed("blkid /dev/vdc | grep -q 'LABEL=\"keep\"'")

    with subtest("the target disk got the declared layout and the embedded system"):
        installer.succeed("udevadm settle")
        parts = installer.succeed("lsblk -nro NAME,LABEL,PARTLABEL /dev/vda").split("\n")
        assert any("ESP" in p for p in parts) and any("nixos" in p for p in parts), parts
        installer.succeed("mount /dev/disk/by-label/nixos /mnt")
        installer.succeed("test \"$(readlink -f /mnt/nix/var/nix/profiles/system)\" = ${toplevel}")
        installer.succeed("grep -qx ${toplevel} /mnt/etc/xnode-installed-system")
        installer.succeed("umount /mnt")

    with subtest("run again, the installer finds no empty disk and wipes nothing"):
        assert install() != 0
        reason = installer.succeed("cat /run/xnode-install/refused")
        assert "no empty, non-removable disk" in reason, reason
        installer.succeed("blkid /dev/disk/by-label/nixos")
        installer.shutdown()

    # The same disk file (see `disk` above), now booted by its own boot loader.
    target.start()
    client.start()

    with subtest("the installed system boots and carries the baked-in identity"):
        target.wait_for_unit("multi-user.target")
        assert target.succeed("hostname").strip() == "installed"
        target.succeed("grep -qx '${owner}' /etc/xnode/owner-address")
        target.succeed("test -e /boot/loader/entries/nixos-generation-1.conf")
        target.succeed("findmnt -no SOURCE / | xargs blkid | grep -q 'LABEL=\"nixos\"'")

    with subtest("reachable over SSH with the owner's key only"):
        target.wait_for_unit("sshd.service")
        client.wait_for_unit("network-online.target")
        client.succeed("install -m 600 ${keys.snakeOilPrivateKey} /root/owner")
        ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=10"
        client.wait_until_succeeds(f"{ssh} -i /root/owner root@${address} true", timeout=180)
        assert client.succeed(f"{ssh} -i /root/owner root@${address} hostname").strip() == "installed"
        client.succeed("ssh-keygen -q -t ed25519 -N ''' -f /root/stranger")
        client.fail(f"{ssh} -i /root/stranger -o IdentitiesOnly=yes root@${address} true")
  '';
}
