# VM test of the XnodeOS installer (xnodeos/installer.nix, the service the installer ISO runs):
#   - refuses while two empty disks qualify, and never touches a disk holding data (even data no
#     signature reveals: a non-zero first MiB) or the disk it runs from;
#   - with one empty disk: partitions it from the declared layout, installs the embedded XnodeOS
#     closure with nixos-install (the VM has no network to fetch anything);
#   - the installed disk boots on its own (UEFI, systemd-boot) into XnodeOS with the baked-in
#     owner, root mounted by the node's partition UUID, and is reachable over SSH from another VM
#     with the owner's key;
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
  inherit (installed.config.xnode.base) partUuids;

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
        inherit toplevel partUuids;
        afterInstall = "none";
        autoStart = false; # the test starts it after adding a second disk
        minDiskGiB = 3;
        espSizeMiB = 256;
      };
      # nixpkgs nixos/modules/virtualisation/qemu-vm.nix: the installer's own root lives on the
      # first extra disk (vdb, 1 GiB); the primary disk (vda, 6 GiB) starts empty and becomes the
      # target; vdc (4 GiB, empty) is a second candidate that makes the choice ambiguous.
      # No default filesystems: with them the VM's start script creates the primary disk as an
      # ext4 filesystem labelled `nixos` (facts/nixos-behaviour.json), so vda would not be blank
      # and a second `nixos` label would exist; the installer's root has no label at all.
      virtualisation.diskImage = disk;
      virtualisation.diskSize = 6144;
      virtualisation.emptyDiskImages = [ 1024 4096 ];
      virtualisation.useDefaultFilesystems = false;
      virtualisation.rootDevice = "/dev/vdb";
      virtualisation.fileSystems."/" = {
        device = "/dev/vdb";
        fsType = "ext4";
        autoFormat = true;
      };
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
        # vda (6 GiB) and vdc (4 GiB) are blank and qualify; vdb is the installer's own root.
        for dev in ("/dev/vda", "/dev/vdc"):
            installer.succeed(f"cmp -s -n 1048576 {dev} /dev/zero")  # really blank
        installer.fail("test -e /dev/disk/by-label/nixos")  # no label to confuse with the install
        assert install() != 0
        reason = installer.succeed("cat /run/xnode-install/refused")
        assert "several empty disks" in reason, reason
        installer.succeed("test -z \"$(wipefs --noheadings /dev/vda)\"")
        installer.succeed("test -z \"$(wipefs --noheadings /dev/vdc)\"")
        installer.succeed("journalctl -u xnode-install.service | grep -q '/dev/vdb is the medium'")

    with subtest("a disk holding data without any signature is never chosen"):
        # As plain dm-crypt or a raw volume look: bytes no signature describes.
        installer.succeed("head -c 4096 /dev/urandom > /tmp/data")
        installer.succeed("dd if=/tmp/data of=/dev/vdc bs=4096 seek=16 conv=notrunc,fsync status=none")
        installer.succeed("test -z \"$(wipefs --noheadings /dev/vdc)\"")  # wipefs sees nothing
        assert install() == 0, installer.succeed("journalctl -u xnode-install.service")
        installer.succeed("test -e /run/xnode-install/done")
        installer.succeed("cmp -n 4096 -i 0:65536 /tmp/data /dev/vdc")  # untouched

    with subtest("the target disk got the declared layout and the embedded system"):
        installer.succeed("udevadm settle")
        parts = installer.succeed("lsblk -nro NAME,LABEL,PARTLABEL /dev/vda").split("\n")
        assert any("ESP" in p for p in parts) and any("nixos" in p for p in parts), parts
        installer.succeed("test \"$(readlink -f /dev/disk/by-partuuid/${partUuids.root})\" = /dev/vda2")
        installer.succeed("test \"$(readlink -f /dev/disk/by-partuuid/${partUuids.esp})\" = /dev/vda1")
        installer.succeed("mount /dev/disk/by-partuuid/${partUuids.root} /mnt")
        installer.succeed("test \"$(readlink -f /mnt/nix/var/nix/profiles/system)\" = ${toplevel}")
        installer.succeed("grep -qx ${toplevel} /mnt/etc/xnode-installed-system")
        installer.succeed("umount /mnt")

    with subtest("run again, the installer finds no empty disk and wipes nothing"):
        assert install() != 0
        reason = installer.succeed("cat /run/xnode-install/refused")
        assert "no empty, non-removable disk" in reason, reason
        installer.succeed("blkid /dev/disk/by-partuuid/${partUuids.root}")
        installer.shutdown()

    # The same disk file (see `disk` above), now booted by its own boot loader.
    target.start()
    client.start()

    with subtest("the installed system boots and carries the baked-in identity"):
        target.wait_for_unit("multi-user.target")
        assert target.succeed("hostname").strip() == "installed"
        target.succeed("grep -qx '${owner}' /etc/xnode/owner-address")
        target.succeed("test -e /boot/loader/entries/nixos-generation-1.conf")
        # Root and ESP mounted by the node's partition UUIDs, the ESP not world-readable.
        target.succeed("test \"$(findmnt -no SOURCE / | xargs blkid -s PARTUUID -o value)\" = ${partUuids.root}")
        target.succeed("test \"$(findmnt -no SOURCE /boot | xargs blkid -s PARTUUID -o value)\" = ${partUuids.esp}")
        target.succeed("findmnt -no OPTIONS /boot | grep -q fmask=0077")

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
