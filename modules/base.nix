# XnodeOS base: what every Xnode is, whatever apps it runs.
#
# - SSH by key only; root may log in with a key, never with a password.
# - Firewall on; only SSH (22) plus what rendered app modules open.
# - Flakes on; the Nix store is garbage-collected without ever losing a rollback target.
# - `generations` system generations are kept AND listed in the boot menu, so any kept
#   generation can be booted, even when the newest one does not come up.
# - journald bounded, time synced, stateVersion pinned.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkDefault mkOption types;
  cfg = config.xnode.base;
  # The ESP holds initrds (and, with secrets in initrd, keys): not world-readable.
  espMasks = [ "fmask=0077" "dmask=0077" ];
  # A partition UUID of this node: stable across its rebuilds (derived from its name), different
  # from every other node's and from the label `nixos` an old install on another disk may carry.
  partUuid = part:
    let h = builtins.hashString "sha256" "xnode-partition-${part}:${config.networking.hostName}";
      at = start: len: builtins.substring start len h;
    in "${at 0 8}-${at 8 4}-4${at 13 3}-8${at 17 3}-${at 20 12}";
in
{
  options.xnode.base = {
    generations = mkOption {
      type = types.ints.between 2 100;
      default = 10;
      description = ''
        How many system generations are kept, and listed in the boot menu. Garbage collection
        trims the system profile to exactly this many before collecting, so every entry in the
        boot menu still has its closure in the store. At least 2, so a rollback target always
        exists.
      '';
    };
    gcSchedule = mkOption {
      type = types.str;
      default = "weekly";
      example = "daily";
      description = "When store garbage collection runs (a systemd calendar expression).";
    };
    journalMaxUse = mkOption {
      type = types.strMatching "[0-9]+[KMG]";
      default = "1G";
      description = "Most disk space the persistent journal may use (journald SystemMaxUse).";
    };
    journalMaxRetention = mkOption {
      type = types.strMatching "[0-9]+(s|min|h|day|week|month|year)";
      default = "1month";
      description = "Journal entries older than this are deleted (journald MaxRetentionSec).";
    };
    sshPort = mkOption {
      type = types.port;
      default = 22;
      description = "Port sshd listens on, the only port open before apps open theirs.";
    };
    timeServers = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "time.cloudflare.com" ];
      description = "NTP servers for timesyncd; null keeps NixOS's pool servers.";
    };
    consoleInfo = mkOption {
      type = types.bool;
      default = true;
      description = ''
        At boot, show the node's name, owner, addresses and SSH host key fingerprints on the
        console, so the operator can compare the fingerprint with the one `xnodectl node add
        --scan` or `xnodectl claim --expect-host-key` sees before trusting it.
      '';
    };
    partUuids = lib.genAttrs [ "root" "esp" ] (part: mkOption {
      type = types.strMatching "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
      default = partUuid part;
      defaultText = lib.literalExpression "derived from networking.hostName";
      description = ''
        GPT partition UUID of the ${part} partition. The XnodeOS installer creates the partitions
        with these, and the node mounts them by these (/dev/disk/by-partuuid), so another disk
        with an old install (label `nixos`, `ESP`) cannot be mounted instead. A machine not
        installed by the installer sets its own fileSystems in hosts/<node>.nix.
      '';
    });
    stateVersion = mkOption {
      type = types.str;
      default = "26.05"; # the pinned release (flake.lock): what new nodes are installed with
      description = ''
        NixOS state version the node was installed with. It pins on-disk data formats of
        services; never raise it on an installed node without reading the release notes.
      '';
    };
  };

  config = {
    # nixpkgs nixos/modules/misc/version.nix. Weaker than mkDefault: the test driver's
    # instrumentation mkDefaults it to the nixpkgs release, which must not conflict after a bump.
    system.stateVersion = lib.mkOverride 1100 cfg.stateVersion;

    # nixpkgs nixos/modules/services/networking/ssh/sshd.nix
    services.openssh = {
      enable = true;
      ports = [ cfg.sshPort ];
      openFirewall = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
        PermitEmptyPasswords = "no";
        X11Forwarding = false;
      };
    };

    # No password anywhere: users are declared here only, root's password is locked ("!"), so the
    # only remote login is an authorized key (xnode.owner.sshKeys). Console login needs a key too,
    # which is the point: Openmesh's debug images shipped a plaintext root password.
    # nixpkgs nixos/modules/config/users-groups.nix
    users.mutableUsers = mkDefault false;
    users.users.root.hashedPassword = mkDefault "!";
    security.sudo.enable = mkDefault false; # root-only node; no wheel users to escalate

    # nixpkgs nixos/modules/services/networking/firewall.nix
    networking.firewall = {
      enable = true;
      allowPing = true;
      logRefusedConnections = false; # a scanned node would otherwise flood the journal
    };

    # nixpkgs nixos/modules/config/nix.nix (nix.settings), nixos/modules/config/nix-channel.nix
    nix.settings = {
      experimental-features = [ "nix-command" "flakes" ];
      trusted-users = [ "root" ];
      # Keep the store usable when the disk fills: collect down to max-free when free space
      # drops under min-free (only unreachable paths; rollback targets are GC roots).
      min-free = mkDefault (1024 * 1024 * 1024);
      max-free = mkDefault (5 * 1024 * 1024 * 1024);
    };
    nix.channel.enable = mkDefault false; # desired state lives in the operator's flake

    # Boot menu with every kept generation. UEFI: systemd-boot; the non-EFI disk image variants
    # (images.qemu / images.raw) switch to GRUB and get the same limit.
    # nixpkgs nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix
    boot.loader.systemd-boot = {
      # Weaker than mkDefault: nixpkgs' disk-image.nix sets `mkDefault efiSupport`, and its
      # non-EFI variants must win without a conflicting-definitions error.
      enable = lib.mkOverride 1100 true;
      configurationLimit = cfg.generations;
      editor = false; # a kernel command line editor at the console is a root shell (init=/bin/sh)
    };
    # boot.loader.efi.canTouchEfiVariables stays at its default, false: no NVRAM boot entries;
    # systemd-boot is also installed at the removable-media fallback path EFI/BOOT/BOOTX64.EFI,
    # which every firmware boots, so cloned disks keep working (nixpkgs
    # nixos/modules/system/boot/loader/efi.nix).
    # nixpkgs nixos/modules/system/boot/loader/grub/grub.nix
    boot.loader.grub.configurationLimit = cfg.generations;
    # nixpkgs nixos/modules/system/boot/loader/loader.nix
    boot.loader.timeout = mkDefault 3;

    # Disks laid out by the XnodeOS installer: mounted by partition UUID (never by a label another
    # disk may carry). nixpkgs' disk images mount by label with a stronger priority (below).
    # nixpkgs nixos/modules/tasks/filesystems.nix
    fileSystems."/" = mkDefault {
      device = "/dev/disk/by-partuuid/${cfg.partUuids.root}";
      fsType = "ext4";
    };
    fileSystems."/boot" = mkDefault {
      device = "/dev/disk/by-partuuid/${cfg.partUuids.esp}";
      fsType = "vfat";
      options = espMasks;
    };
    # nixpkgs nixos/modules/virtualisation/disk-image.nix defines fileSystems."/boot" with
    # mkImageMediaOverride (priority 60); attrsOf keeps only an element's strongest definitions, so
    # the mkDefault above vanishes from disk images, masks included. The image variants get the
    # whole ESP definition at the same priority (equal device/fsType merge, the masks survive).
    # nixpkgs nixos/modules/image/images.nix (image.modules: attrsOf deferredModule)
    image.modules = lib.genAttrs [ "qemu-efi" "raw-efi" ] (_: {
      fileSystems."/boot" = lib.mkImageMediaOverride {
        device = "/dev/disk/by-label/ESP";
        fsType = "vfat";
        options = espMasks;
      };
    });
    # Storage and USB controllers of common servers and VMs, so one image boots on most machines.
    # nixpkgs nixos/modules/system/boot/kernel.nix
    boot.initrd.availableKernelModules = [
      "ahci" "nvme" "xhci_pci" "ehci_pci" "usb_storage" "usbhid" "sd_mod" "sr_mod"
      "virtio_pci" "virtio_blk" "virtio_scsi" "virtio_net" "megaraid_sas" "mpt3sas"
    ];

    # Garbage collection that keeps rollback targets. nixpkgs' nix-gc unit runs
    # `nix-collect-garbage <options>`; before it, the system profile is trimmed to the newest
    # `generations` entries with `nix-env --delete-generations +N`, which never deletes the
    # current generation. The collector then only frees paths no remaining generation, no
    # /run/current-system and no /run/booted-system (both GC roots) references. No
    # `--delete-old`/`--delete-older-than`: those would drop every older generation at once.
    # Because the boot menu lists the same N generations, every menu entry stays bootable.
    # nixpkgs nixos/modules/services/misc/nix-gc.nix
    nix.gc = {
      automatic = true;
      dates = cfg.gcSchedule;
      randomizedDelaySec = "1h";
      persistent = true;
      options = "";
    };
    systemd.services.nix-gc.preStart = ''
      ${config.nix.package}/bin/nix-env --profile /nix/var/nix/profiles/system \
        --delete-generations +${toString cfg.generations}
    '';

    # nixpkgs nixos/modules/system/boot/systemd/journald.nix: `settings.<section>.<key>` (freeform,
    # journald.conf(5)); `extraConfig` is deprecated in 26.05 and removed in 26.11.
    services.journald.settings.Journal = {
      Storage = mkDefault "persistent";
      SystemMaxUse = cfg.journalMaxUse;
      MaxRetentionSec = cfg.journalMaxRetention;
    };

    # nixpkgs nixos/modules/system/boot/systemd/timesyncd.nix
    # mkDefault: QEMU guests (nixpkgs nixos/modules/virtualisation/qemu-vm.nix) turn it off.
    services.timesyncd.enable = mkDefault true;
    # nixpkgs nixos/modules/tasks/network-interfaces.nix (networking.timeServers)
    networking.timeServers = lib.mkIf (cfg.timeServers != null) cfg.timeServers;

    # Networking: NixOS's default (DHCP on every interface, networking.useDHCP) until the
    # operator's host module says otherwise; not set here so NetworkManager or networkd modules
    # can change it with their own mkDefault.

    # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.services.<name>); systemd.exec(5)
    # StandardOutput=journal+console: the text reaches the console, not only the journal.
    systemd.services.xnode-console-info = lib.mkIf cfg.consoleInfo {
      description = "Show the node's identity and SSH host key fingerprints on the console";
      wantedBy = [ "multi-user.target" ];
      # Addresses are shown once the network is up; ordering after network-online.target without
      # wanting it would not pull it in (NixOS warns about exactly that).
      wants = [ "network-online.target" ];
      after = [ "sshd.service" "sshd-keygen.service" "network-online.target" ];
      path = [ pkgs.openssh pkgs.iproute2 pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        StandardOutput = "journal+console";
      };
      script = ''
        echo "XnodeOS node $(cat /proc/sys/kernel/hostname)"
        if [ -e /etc/xnode/owner-address ]; then echo "owner: $(cat /etc/xnode/owner-address)"; fi
        ip -brief address show scope global || true
        for key in /etc/ssh/ssh_host_*_key.pub; do
          [ -e "$key" ] && ssh-keygen -l -f "$key"
        done
        true
      '';
    };

    # Nothing documentation-sized or interactive that a headless node does not need.
    # nixpkgs nixos/modules/misc/documentation.nix
    documentation.enable = mkDefault false;
    environment.systemPackages = [ pkgs.git ]; # flakes fetch git inputs on the node
  };
}
