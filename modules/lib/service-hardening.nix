# systemd sandboxing shared by xnodectl's own node-side services (claim service, wallet gate):
# merged into their serviceConfig, which adds what each one needs (user, writable paths, umask).
# nixpkgs nixos/lib/systemd-unit-options.nix (serviceConfig is passed to systemd as-is);
# the directives are systemd.exec(5), systemd.resource-control(5) and systemd.service(5).
{
  Restart = "on-failure";
  RestartSec = 2;
  # Resources: the services hold at most 64 handler threads (xnodectl/nodeside/server.py) and use
  # about 75 MB once siwe and eth-account are loaded; a flood can neither fork the node to death
  # nor eat its memory. The kernel kills the service, systemd restarts it.
  TasksMax = 96;
  MemoryMax = "256M";
  LimitNOFILE = 256;
  CPUWeight = 50;
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  NoNewPrivileges = true;
  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectClock = true;
  ProtectHostname = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  RemoveIPC = true;
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
  SystemCallErrorNumber = "EPERM";
}
