# The XnodeOS installer service: partitions one disk from a declared layout, installs an embedded
# XnodeOS closure with nixos-install (no network needed) and reboots into it.
#
# Which disk: `disk` (a /dev/disk/by-id path baked in by `xnodectl image build --disk`) or, when
# null, the only disk that qualifies. A disk qualifies only if it is a whole, writable,
# non-removable disk of at least minDiskGiB that is not the medium the installer booted from, has
# nothing mounted, and is empty (no partition table, no signature wipefs knows, and an all-zero
# first MiB: data without a signature, such as plain dm-crypt or a raw volume, is not empty). A non-empty disk is
# used only when it is named explicitly AND `wipe = true`; a disk that already holds this very
# XnodeOS is never wiped again (so a forgotten USB stick cannot reinstall in a loop). Anything
# else: the installer refuses, writes nothing and says on the console what to do.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.xnode.installer;

  # The layout, rendered from the options above into sfdisk's input language (GPT, ESP + root).
  # Partition types: EFI System and Linux filesystem GUIDs; `uuid=` sets the partition's own
  # UUID, the one the installed system mounts by (util-linux sfdisk(8)).
  layout = pkgs.writeText "xnode-layout.sfdisk" ''
    label: gpt
    size=${toString cfg.espSizeMiB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=${cfg.partUuids.esp}, name="ESP"
    type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=${cfg.partUuids.root}, name="nixos"
  '';

  settings = pkgs.writeText "xnode-install.json" (builtins.toJSON {
    inherit (cfg) disk wipe afterInstall partUuids;
    toplevel = "${cfg.toplevel}";
    layout = "${layout}";
    minDiskBytes = cfg.minDiskGiB * 1024 * 1024 * 1024;
  });

  # nixpkgs pkgs/build-support/trivial-builders (writeShellApplication: set -euo pipefail + shellcheck)
  installer = pkgs.writeShellApplication {
    name = "xnode-install";
    runtimeInputs = with pkgs; [
      coreutils util-linux gawk jq dosfstools e2fsprogs systemd nixos-install nix
    ];
    text = builtins.readFile ./install.sh;
  };
in
{
  options.xnode.installer = {
    toplevel = mkOption {
      type = types.package;
      description = "The XnodeOS system (config.system.build.toplevel) to install; its closure is embedded.";
    };
    disk = mkOption {
      type = types.nullOr (types.strMatching "/dev/[A-Za-z0-9/_.:+-]+");
      default = null;
      example = "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456";
      description = ''
        The disk to install onto, preferably a /dev/disk/by-id path (stable across boots and
        machines). Null: use the only empty, non-removable disk; refuse if there are several.
      '';
    };
    wipe = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Allow erasing `disk` when it already holds partitions or data. Only honoured together with
        an explicit `disk`; the auto-selected disk must always be empty.
      '';
    };
    espSizeMiB = mkOption {
      type = types.ints.between 256 8192;
      default = 1024;
      description = "Size of the EFI system partition (holds kernels of every kept generation).";
    };
    minDiskGiB = mkOption {
      type = types.ints.positive;
      default = 16;
      description = "Disks smaller than this are never chosen.";
    };
    partUuids = mkOption {
      type = types.submodule {
        options = lib.genAttrs [ "root" "esp" ] (part: mkOption {
          type = types.strMatching "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
          description = "GPT partition UUID of the ${part} partition.";
        });
      };
      description = ''
        The partition UUIDs the installed system mounts / and /boot by: its
        xnode.base.partUuids (mk-installer.nix passes them).
      '';
    };
    afterInstall = mkOption {
      type = types.enum [ "reboot" "poweroff" "none" ];
      default = "reboot";
      description = "What the installer does once XnodeOS is installed.";
    };
    autoStart = mkOption {
      type = types.bool;
      default = true;
      description = "Start installing at boot without any console interaction.";
    };
  };

  config = {
    environment.systemPackages = [ installer ];

    # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.services.<name>)
    systemd.services.xnode-install = {
      description = "Install XnodeOS onto this machine's disk";
      wantedBy = lib.optional cfg.autoStart "multi-user.target";
      after = [ "local-fs.target" "nix-daemon.socket" ];
      requires = [ "nix-daemon.socket" ];
      path = [ installer ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        # Progress and refusals are shown on the console: the operator is at the machine.
        StandardOutput = "journal+console";
        StandardError = "journal+console";
        ExecStart = "${installer}/bin/xnode-install ${settings}";
      };
    };
  };
}
