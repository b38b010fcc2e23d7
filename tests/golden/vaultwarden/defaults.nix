# Rendered by xnodectl 0.1.0 from template 'vaultwarden' as app 'vaultwarden'.
# Do not edit: change the parameters and render again.
# parameters: domain="http://localhost", signups_allowed=false, database="sqlite", port=8222, expose=false
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        port = 8222;
        postgres = "sqlite" == "postgresql";
        envDir = "/run/xnode-vaultwarden";
        # A root oneshot turns the admin token secret (a systemd credential) into the environment file
        # vaultwarden's unit reads, in a root-only runtime directory: never in the store. Quotes and
        # newlines are refused because a systemd environment file could not carry them verbatim.
        writeEnv = pkgs.writeShellScript "vaultwarden-admin-token" ''
          set -eu
          umask 077
          token=$(cat "$CREDENTIALS_DIRECTORY/admin_token")
          if [ -z "$token" ]; then
            echo "the admin_token secret is empty" >&2
            exit 1
          fi
          case "$token" in
            *\'* | *\"* | *\\*)
              echo "the admin_token secret may not contain quotes or backslashes" >&2
              exit 1 ;;
          esac
          if [ "$(printf '%s' "$token" | wc -l)" -ne 0 ]; then
            echo "the admin_token secret must be one line" >&2
            exit 1
          fi
          printf "ADMIN_TOKEN='%s'\n" "$token" > ${envDir}/env.tmp
          mv ${envDir}/env.tmp ${envDir}/env
        '';
      in
      {
        # nixpkgs nixos/modules/services/security/vaultwarden/default.nix (enable, dbBackend, config,
        # environmentFile). Setting `config` replaces its default, so the bind address and port are
        # always given; the default address would be ::1.
        services.vaultwarden = {
          enable = true;
          dbBackend = "sqlite";
          environmentFile = "${envDir}/env";
          config = {
            ROCKET_ADDRESS = "127.0.0.1";
            ROCKET_PORT = port;
            # The path makes vaultwarden serve everything under /vault, matching the proxy route.
            DOMAIN = "http://localhost" + "/vault";
            SIGNUPS_ALLOWED = false;
          } // lib.optionalAttrs postgres {
            # The node's PostgreSQL (shared with the postgres template when both are deployed) over its
            # Unix socket, whose name carries the server's port; peer authentication as the vaultwarden
            # system user, so no password exists.
            DATABASE_URL = "postgresql:///vaultwarden?host=/run/postgresql&port="
              + toString config.services.postgresql.settings.port;
          };
        };

        # nixpkgs nixos/lib/systemd-unit-options.nix (requiredBy, before, partOf, serviceConfig) and
        # nixos/modules/system/boot/systemd.nix (systemd.services)
        systemd.services.vaultwarden-admin-token = {
          description = "Vaultwarden admin token environment file";
          requiredBy = [ "vaultwarden.service" ];
          before = [ "vaultwarden.service" ];
          # Restarting vaultwarden (e.g. after a new token is uploaded) rewrites the file first.
          partOf = [ "vaultwarden.service" ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            LoadCredential = [ "admin_token:${ "/var/lib/xnode/secrets/vaultwarden/admin_token" }" ];
            RuntimeDirectory = "xnode-vaultwarden";
            RuntimeDirectoryMode = "0700";
            RuntimeDirectoryPreserve = true;
            ExecStart = writeEnv;
          };
        };

        # nixpkgs nixos/modules/services/databases/postgresql.nix (enable, settings.port, ensureDatabases,
        # ensureUsers.*.ensureDBOwnership)
        services.postgresql = lib.mkIf postgres {
          enable = true;
          ensureDatabases = [ "vaultwarden" ];
          ensureUsers = [{ name = "vaultwarden"; ensureDBOwnership = true; }];
        };
        # postgresql.target (roles and databases ensured) exists on newer releases; ordering after a
        # unit that does not exist is a no-op, so both are named.
        systemd.services.vaultwarden = lib.mkIf postgres {
          requires = [ "postgresql.service" ];
          wants = [ "postgresql.target" ];
          after = [ "postgresql.service" "postgresql.target" ];
        };

        # modules/proxy.nix: the vault behind the node's reverse proxy (localhost unless exposed). No
        # wallet gate: Bitwarden apps talk to this API directly.
        xnode.proxy.routes."/vault/" = {
          port = port;
          public = false;
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ ];
  networking.firewall.allowedUDPPorts = [ ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.vaultwarden = { template = "vaultwarden"; health = [ { kind = "systemd"; target = "vaultwarden.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "8222"; status = 200; timeout = 60; } { kind = "http"; target = "http://127.0.0.1:8222/vault/alive"; status = 200; timeout = 120; } ]; secrets = [ { name = "admin_token"; path = "/var/lib/xnode/secrets/vaultwarden/admin_token"; owner = "root"; group = "root"; } ]; ports = [ { port = 8222; protocol = "tcp"; public = false; purpose = "vaultwarden (127.0.0.1, behind the proxy at /vault/)"; metrics = false; } ]; };
}
