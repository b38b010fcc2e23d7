# VM test of the XnodeOS base (modules/base.nix + modules/owner.nix) booted through its real boot
# loader (UEFI + systemd-boot, as the qemu-efi image and installed nodes boot):
#   - SSH accepts the owner's baked-in key, refuses passwords and any other key;
#   - a port scan from a second VM finds only 22/tcp open;
#   - root's password is locked (the test instrumentation's empty root password is undone here);
#   - a second generation (a specialisation of the same machine: same name and address) can be
#     switched to and rolled back;
#   - the previous generation boots from the boot menu (a one-shot entry, as an operator at the
#     console would pick it), and the default entry is the newest again afterwards;
#   - the garbage collector trims the system profile to `xnode.base.generations` and keeps every
#     remaining generation (and so every boot-menu entry) intact.
{ pkgs, self }:
let
  system = pkgs.stdenv.hostPlatform.system;
  # nixpkgs nixos/tests/ssh-keys.nix: a throwaway key pair for tests (ecdsa-sha2-nistp256)
  keys = import (pkgs.path + "/nixos/tests/ssh-keys.nix") pkgs;
  owner = "0x52908400098527886E0F7030069857D2E4169EE7";

  xnode = generation: { lib, modulesPath, ... }: {
    imports = [ self.nixosModules.default (modulesPath + "/profiles/qemu-guest.nix") ];
    xnode.package = self.packages.${system}.xnodectl;
    xnode.owner = { address = owner; sshKeys = [ keys.snakeOilPublicKey ]; requireAccess = true; };
    # Few generations so the test can watch the garbage collector trim the profile.
    xnode.base.generations = 2;
    environment.etc."xnode-test-generation".text = lib.mkDefault generation;
    # nixpkgs nixos/modules/testing/test-instrumentation.nix gives root an empty password file at
    # priority 150 (facts/nixos-behaviour.json); a real node has none, which is what is tested.
    users.users.root.hashedPasswordFile = lib.mkForce null;
    # Deploys switch generations on a node; test VMs may leave switching off by default.
    # nixpkgs nixos/modules/system/activation/switchable-system.nix
    system.switch.enable = true;
    # nixpkgs nixos/modules/virtualisation/qemu-vm.nix
    virtualisation.useBootLoader = true;
    virtualisation.useEFIBoot = true;
    virtualisation.memorySize = 1536;
  };
in
pkgs.testers.runNixOSTest {
  name = "xnodeos-base";
  globalTimeout = 1800;

  nodes = {
    machine = { lib, ... }: {
      imports = [ (xnode "1") ];
      # The second generation: the same machine (hostname, address, disks) with one file changed.
      # A specialisation's system is in machine's closure, so switching needs no network.
      # nixpkgs nixos/modules/system/activation/specialisation.nix
      specialisation.gen2.configuration.environment.etc."xnode-test-generation".text = lib.mkForce "2";
    };
    scanner = { pkgs, ... }: {
      environment.systemPackages = [ pkgs.nmap pkgs.openssh ];
    };
  };

  testScript = { nodes, ... }:
    let
      gen2 = nodes.machine.specialisation.gen2.configuration.system.build.toplevel;
    in
    ''
      profile = "/nix/var/nix/profiles/system"

      def generation():
          return machine.succeed("cat /etc/xnode-test-generation").strip()

      def switch(action):
          machine.succeed(f"{profile}/bin/switch-to-configuration {action}")

      machine.start()
      scanner.start()
      machine.wait_for_unit("multi-user.target")
      machine.wait_for_unit("sshd.service")
      scanner.wait_for_unit("network-online.target")

      with subtest("identity is baked in, root's password is locked"):
          machine.succeed("grep -qx '${owner}' /etc/xnode/owner-address")
          machine.succeed("passwd -S root | grep -qE '^root (L|LK) '")
          machine.succeed("sshd -T | grep -qx 'passwordauthentication no'")
          # The console shows the host key fingerprint the operator compares when pinning it.
          fingerprint = machine.succeed(
              "ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2"
          ).strip()
          machine.wait_until_succeeds(
              f"journalctl -u xnode-console-info.service | grep -qF {fingerprint}"
          )
          # prohibit-password: sshd -T prints it under its older name without-password
          machine.succeed("sshd -T | grep -qxE 'permitrootlogin (prohibit|without)-password'")

      with subtest("SSH accepts the owner's key only"):
          scanner.succeed("install -m 600 ${keys.snakeOilPrivateKey} /root/owner")
          scanner.succeed("ssh-keygen -q -t ed25519 -N ''' -f /root/stranger")
          ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=10"
          scanner.wait_until_succeeds(f"{ssh} -i /root/owner root@machine true", timeout=120)
          assert scanner.succeed(f"{ssh} -i /root/owner root@machine hostname").strip() == "machine"
          scanner.fail(f"{ssh} -i /root/stranger -o IdentitiesOnly=yes root@machine true")
          # The server offers public-key authentication only: no password, no keyboard-interactive.
          out = scanner.fail(
              f"{ssh} -o PubkeyAuthentication=no "
              "-o PreferredAuthentications=password,keyboard-interactive root@machine true 2>&1"
          )
          assert "Permission denied (publickey)" in out, out

      with subtest("only port 22 is open (TCP scan of every port from another VM)"):
          out = scanner.succeed(
              "nmap -Pn -n -p- --min-rate 3000 --max-retries 1 -oG - machine | grep 'Ports:'"
          )
          open_ports = sorted(
              p.strip().split("/")[0] for p in out.split("Ports:")[1].split(",") if "/open/" in p
          )
          assert open_ports == ["22"], out

      with subtest("a second generation can be switched to and rolled back"):
          # The VM's disk was not made by nixos-install: record the booted system as generation 1.
          machine.succeed(f"test -e {profile} || nix-env -p {profile} --set /run/current-system")
          gen1 = machine.succeed(f"readlink -f {profile}").strip()
          machine.succeed("mount -o remount,rw /boot")  # some qemu-vm versions mount the ESP ro
          machine.succeed(f"nix-env -p {profile} --set ${gen2}")
          switch("switch")
          assert generation() == "2"
          machine.succeed("test -e /boot/loader/entries/nixos-generation-1.conf")
          machine.succeed("test -e /boot/loader/entries/nixos-generation-2.conf")
          machine.succeed(f"nix-env -p {profile} --rollback")
          switch("switch")
          assert generation() == "1"
          machine.succeed(f"nix-env -p {profile} --switch-generation 2")
          switch("boot")

      with subtest("the previous generation boots from the boot menu"):
          machine.succeed("bootctl list | grep -q nixos-generation-1.conf")
          machine.succeed("bootctl set-oneshot nixos-generation-1.conf")
          machine.shutdown()
          machine.start()
          machine.wait_for_unit("multi-user.target")
          assert generation() == "1"
          assert machine.succeed("readlink -f /run/booted-system").strip() == gen1
          # The one-shot entry is used once; the default is the newest generation again.
          machine.shutdown()
          machine.start()
          machine.wait_for_unit("multi-user.target")
          assert generation() == "2"
          machine.wait_for_unit("sshd.service")
          scanner.wait_until_succeeds(f"{ssh} -i /root/owner root@machine true", timeout=120)

      with subtest("garbage collection keeps exactly the newest N generations, all intact"):
          machine.succeed(f"nix-env -p {profile} --set {gen1}")  # generation 3
          switch("boot")
          machine.succeed("systemctl start nix-gc.service")
          gens = machine.succeed(f"nix-env -p {profile} --list-generations").splitlines()
          assert [g.split()[0] for g in gens] == ["2", "3"], gens
          assert "(current)" in gens[-1]
          for path in (gen1, "${gen2}"):
              machine.succeed(f"nix-store --check-validity {path}")
              machine.succeed(f"nix-store --verify-path {path}")
          switch("boot")
          entries = machine.succeed("ls /boot/loader/entries").split()
          # Generation 3 is machine's own system: systemd-boot also lists its specialisation.
          assert sorted(entries) == [
              "nixos-generation-2.conf",
              "nixos-generation-3-specialisation-gen2.conf",
              "nixos-generation-3.conf",
          ], entries
    '';
}
