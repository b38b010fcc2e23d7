# Rendered by xnodectl 0.1.0 from template 'postgres' as app 'postgres'.
# Do not edit: change the parameters and render again.
# parameters: version="17", databases=[ "app" ], users=[ "app" ], port=5432, listen_address="127.0.0.1", open_firewall=false, allowed_cidrs=[ ], backup=true, backup_schedule="daily", backup_retention="14d", backup_dir="/var/backup/postgresql"
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        databases = [ "app" ];
        users = [ "app" ];
        listenAddress = "127.0.0.1";
        loopback = builtins.elem listenAddress [ "127.0.0.1" "localhost" ];
        # A specific address is listened on beside loopback, so local clients and the health probe work.
        listenAddresses =
          if loopback || listenAddress == "*" || listenAddress == "0.0.0.0"
          then listenAddress else "127.0.0.1,${listenAddress}";
        pg = config.services.postgresql.finalPackage;
      in
      {
        assertions = [
          {
            assertion = false -> !loopback;
            message = "postgres: open_firewall=true needs a listen_address other than 127.0.0.1/localhost";
          }
        ];

        # nixpkgs nixos/modules/services/databases/postgresql.nix (services.postgresql.{enable,package,
        # settings,authentication,ensureDatabases,ensureUsers}); the pinned nixos-26.05 ships postgresql_14 .. _18.
        services.postgresql = {
          enable = true;
          package = pkgs.postgresql_17;
          # The module sets listen_addresses from enableTCPIP ("localhost" or "*") without a priority.
          settings.listen_addresses = lib.mkForce listenAddresses;
          settings.port = 5432;
          settings.password_encryption = "scram-sha-256";
          ensureDatabases = databases;
          # User names are validated identifiers: the module pastes them into SQL in its setup script.
          ensureUsers = map
            (name: {
              inherit name;
              ensureDBOwnership = builtins.elem name databases;
              ensureClauses.login = true;
            })
            users;
          # Rules above the module's defaults (local peer, 127.0.0.1 and ::1 with md5).
          authentication = lib.concatMapStrings
            (cidr: "host all all ${cidr} scram-sha-256\n")
            [ ];
        };

        # The users' password is read from the secret file at runtime through a systemd credential (the
        # file stays root-only; the unit sees a private copy) and never appears in the Nix store.
        # nixpkgs nixos/lib/systemd-unit-options.nix (systemd.services.<name>.{script,path,serviceConfig})
        systemd.services.postgres-password = {
          description = "Set the passwords of the PostgreSQL users from the secret file";
          after = [ "postgresql-setup.service" ];
          requires = [ "postgresql-setup.service" ];
          wantedBy = [ "multi-user.target" "postgresql.target" ];
          path = [ pg ];
          environment.PGPORT = toString 5432;
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            User = "postgres";
            Group = "postgres";
            LoadCredential = [ "password:${ "/var/lib/xnode/secrets/postgres/password" }" ];
            PrivateTmp = true;
            NoNewPrivileges = true;
          };
          # psql reads the password into a variable and quotes it itself (:'pw'); it is never on a
          # command line or in the environment.
          script = ''
            set -euo pipefail
            test -s "$CREDENTIALS_DIRECTORY/password" || { echo "the password secret is empty" >&2; exit 1; }
            for role in ${lib.escapeShellArgs users}; do
              psql -X -q -v ON_ERROR_STOP=1 -v role="$role" -d postgres <<'SQL'
            \set pw `cat "$CREDENTIALS_DIRECTORY/password"`
            ALTER ROLE :"role" WITH LOGIN PASSWORD :'pw';
            SQL
            done
            echo "password applied to ${toString (builtins.length users)} users"
          '';
        };
        # A new secret file (a deploy that rotates the password) re-applies it without touching the
        # server: modules/apps.nix's watcher restarts only this unit (a restart of an active
        # RemainAfterExit oneshot runs it again, once); the default would restart every unit the health
        # probes watch, postgresql.service included.
        xnode.apps.postgres.restartOnSecretChange = [ "postgres-password.service" ];

        # Scheduled dumps with retention. nixpkgs' services.postgresqlBackup
        # (nixos/modules/services/backup/postgresql-backup.nix) keeps only the latest and one previous
        # dump, so this unit keeps timestamped dumps and deletes those older than the retention.
        # nixpkgs nixos/lib/systemd-unit-options.nix (startAt) and
        # nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules)
        systemd.tmpfiles.rules = [ "d ${ "/var/backup/postgresql" } 0700 postgres postgres -" ];
        systemd.services.postgres-backup = {
          description = "Dump the PostgreSQL databases and delete expired dumps";
          after = [ "postgresql.target" ];
          requires = [ "postgresql.service" ];
          startAt = "daily";
          path = [ pg pkgs.coreutils pkgs.findutils ];
          environment = {
            PGPORT = toString 5432;
            BACKUP_DIR = "/var/backup/postgresql";
            KEEP_MINUTES = toString 20160;
          };
          serviceConfig = {
            Type = "oneshot";
            User = "postgres";
            Group = "postgres";
            UMask = "0077";
            PrivateTmp = true;
            NoNewPrivileges = true;
          };
          script = ''
            set -euo pipefail
            stamp=$(date -u +%Y%m%dT%H%M%SZ)
            pg_dumpall --globals-only > "$BACKUP_DIR/.globals-$stamp.tmp"
            mv "$BACKUP_DIR/.globals-$stamp.tmp" "$BACKUP_DIR/globals-$stamp.sql"
            psql -X -At -d postgres -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate" |
              while IFS= read -r db; do
                file=$(printf '%s' "$db" | tr -c 'A-Za-z0-9_.-' '_')
                pg_dump -Fc -d "$db" -f "$BACKUP_DIR/.$file-$stamp.tmp"
                mv "$BACKUP_DIR/.$file-$stamp.tmp" "$BACKUP_DIR/$file-$stamp.dump"
              done
            find "$BACKUP_DIR" -maxdepth 1 -type f \( -name '*.dump' -o -name 'globals-*.sql' \) \
              -mmin +"$KEEP_MINUTES" -delete
          '';
        };
        # A missed run (node off at the scheduled time) happens at the next boot.
        systemd.timers.postgres-backup.timerConfig.Persistent = true;
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ ];
  networking.firewall.allowedUDPPorts = [ ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.postgres = { template = "postgres"; health = [ { kind = "systemd"; target = "postgresql.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "postgresql-setup.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "postgres-password.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "5432"; status = 200; timeout = 60; } ]; secrets = [ { name = "password"; path = "/var/lib/xnode/secrets/postgres/password"; owner = "root"; group = "root"; } ]; ports = [ { port = 5432; protocol = "tcp"; public = false; purpose = "PostgreSQL"; metrics = false; } ]; };
}
