# systemd sandboxing shared by xnodectl's own node-side services (claim service, wallet gate):
# merged into their serviceConfig, which adds what each one needs (user, writable paths, umask).
# nixpkgs nixos/lib/systemd-unit-options.nix (serviceConfig is passed to systemd as-is);
# the directives are systemd.exec(5) and systemd.service(5).
{
  Restart = "on-failure";
  RestartSec = 2;
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  NoNewPrivileges = true;
  CapabilityBoundingSet = "";
  RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectControlGroups = true;
  RestrictNamespaces = true;
  LockPersonality = true;
  SystemCallArchitectures = "native";
}
