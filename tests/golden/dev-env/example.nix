# Rendered by xnodectl 0.1.0 from template 'dev-env' as app 'dev-env'.
# Do not edit: change the parameters and render again.
# parameters: port=4444, user="alice", workspace="/home/alice/projects", expose=true, wallet_gate=true
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        user = "alice";
        group = config.services.code-server.group;
        workspace = "/home/alice/projects";
        # code-server reads its password from the YAML file named by $CODE_SERVER_CONFIG (CLI flags
        # still win for everything else). This runs as the service user before code-server: it turns
        # the password secret (a systemd credential, read by PID 1 from the root-only file) into that
        # file in the unit's runtime directory. JSON is YAML, and jq quotes any password safely.
        configFile = "/run/${user}/config.yaml";
        writeConfig = pkgs.writeShellScript "code-server-password" ''
          set -eu
          umask 077
          ${lib.getExe pkgs.jq} -n --rawfile s "$CREDENTIALS_DIRECTORY/password" '
            ($s | rtrimstr("\n")) as $p
            | if ($p | length) == 0 then error("the password secret is empty")
              elif ($p | startswith("$argon2")) then {"hashed-password": $p}
              else {"password": $p} end' > ${configFile}
        '';
      in
      {
        # nixpkgs nixos/modules/services/web-apps/code-server.nix (enable, host, port, auth, user,
        # extraEnvironment, extraArguments, disableTelemetry, disableUpdateCheck). host defaults to
        # "localhost", which may resolve to ::1: bind IPv4 loopback explicitly for the proxy.
        services.code-server = {
          enable = true;
          host = "127.0.0.1";
          port = 4444;
          auth = "password";
          inherit user;
          extraEnvironment.CODE_SERVER_CONFIG = configFile;
          disableTelemetry = true;
          disableUpdateCheck = true;
          # The folder to open is code-server's positional argument.
          extraArguments = [ workspace ];
        };

        # nixpkgs nixos/modules/system/boot/systemd.nix (serviceConfig; list values merge with the
        # code-server module's own)
        systemd.services.code-server.serviceConfig = {
          LoadCredential = [ "password:${ "/var/lib/xnode/secrets/dev-env/password" }" ];
          ExecStartPre = [ writeConfig ];
        };

        # nixpkgs nixos/modules/config/users-groups.nix (users.users.<name>.isNormalUser). The
        # code-server module creates only its default user; any other one is created here as a normal
        # user (primary group "users"; the unit itself runs with the code-server group). An existing
        # account keeps its own settings.
        users.users.${user}.isNormalUser = lib.mkDefault true;

        # nixpkgs nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules)
        systemd.tmpfiles.rules = [ "d ${workspace} 0750 ${user} ${group} -" ];

        # modules/proxy.nix: the editor behind the node's reverse proxy (localhost unless exposed).
        # code-server uses relative URLs, so the /code/ prefix is stripped before it.
        xnode.proxy.routes."/code/" = {
          port = 4444;
          public = true;
          walletGate = true;
          stripPrefix = true;
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ ];
  networking.firewall.allowedUDPPorts = [ ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.dev-env = { template = "dev-env"; health = [ { kind = "systemd"; target = "code-server.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "4444"; status = 200; timeout = 120; } { kind = "http"; target = "http://127.0.0.1:4444/healthz"; status = 200; timeout = 120; } ]; secrets = [ { name = "password"; path = "/var/lib/xnode/secrets/dev-env/password"; owner = "root"; group = "root"; } ]; ports = [ { port = 4444; protocol = "tcp"; public = false; purpose = "code-server (127.0.0.1, behind the proxy at /code/)"; metrics = false; } ]; };
}
