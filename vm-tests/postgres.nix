# VM test of the `postgres` template (golden defaults render: PostgreSQL 17 on 127.0.0.1, database
# and user `app`, daily dumps kept 14 days). No network: the server and its setup start, the secret
# password file (written by the test, as the deploy engine would upload it) is applied by
# postgres-password.service, `app` logs in over TCP with it and runs SQL, a rotated password file is
# applied again (once, with the server left running), a dump is made and lists the table, port 5432 is not reachable from a second VM,
# and neither password is anywhere in the system closure.
{ pkgs, self }:
let
  secretPath = "/var/lib/xnode/secrets/postgres/password";
in
pkgs.testers.runNixOSTest {
  name = "xnode-template-postgres";
  globalTimeout = 1200;

  nodes.node = { lib, ... }: {
    imports = [ self.nixosModules.default ../tests/golden/postgres/defaults.nix ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # A test VM has no owner and no operator key (xnode.owner in modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 1024;
    # The test writes the secret file first and then starts the unit itself.
    systemd.services.postgres-password.wantedBy = lib.mkForce [ ];
  };
  nodes.client = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.netcat ];
  };

  testScript = builtins.readFile ./lib/probes.py + ''
    import secrets

    # Chosen at run time, so it exists only in the VM's secret file, never in a derivation.
    password = "xnode-pg-" + secrets.token_hex(16)
    secret_path = "${secretPath}"

    start_all()

    with subtest("server and setup (health probes of template.toml)"):
        node.wait_for_unit("postgresql.service")
        node.wait_for_unit("postgresql-setup.service")
        node.wait_for_open_port(5432)
        node.succeed("runuser -u postgres -- psql -d app -tAc 'select current_database()' | grep -x app")
        # The ensured user owns the ensured database of the same name.
        node.succeed(
            "runuser -u postgres -- psql -tAc "
            "\"select pg_get_userbyid(datdba) from pg_database where datname = 'app'\" | grep -x app"
        )

    with subtest("the secret password is applied at runtime"):
        node.succeed(f"install -d -m 0711 {secret_path.rsplit('/', 1)[0]}")
        node.succeed(f"(umask 077; printf '%s\\n' '{password}' > {secret_path})")
        node.succeed("systemctl start postgres-password.service")
        node.wait_for_unit("postgres-password.service")
        node.succeed(
            f"PGPASSWORD='{password}' psql -h 127.0.0.1 -U app -d app -v ON_ERROR_STOP=1 -tAc "
            "'create table answers (x int); insert into answers values (42); select x from answers' | grep -x 42"
        )
        node.fail("PGPASSWORD=wrong-password psql -h 127.0.0.1 -U app -d app -tAc 'select 1'")

    with subtest("a rotated secret is applied once, the server keeps running (xnode-secrets-postgres.path)"):
        def applied():
            return int(node.succeed(
                "journalctl -o cat -u postgres-password.service | grep -c '^password applied' || true"
            ).strip())
        server = node.succeed("systemctl show -p MainPID --value postgresql.service").strip()
        before = applied()
        rotated = "xnode-pg-" + secrets.token_hex(16)
        node.succeed(
            f"(umask 077; printf '%s\\n' '{rotated}' > {secret_path}.new) && mv {secret_path}.new {secret_path}"
        )
        node.wait_until_succeeds(
            f"PGPASSWORD='{rotated}' psql -h 127.0.0.1 -U app -d app -tAc 'select 1'", timeout=60
        )
        node.fail(f"PGPASSWORD='{password}' psql -h 127.0.0.1 -U app -d app -tAc 'select 1'")
        node.sleep(5)  # a second applier (the old template had one) would have run by now
        t.assertEqual(applied(), before + 1)
        t.assertEqual(node.succeed("systemctl show -p MainPID --value postgresql.service").strip(), server)

    with subtest("every health probe of the template passes, for the node's deploy agent too"):
        run_health_probes(node, "postgres")

    with subtest("a dump is written and kept"):
        node.succeed("systemctl start postgres-backup.service")
        node.succeed("ls /var/backup/postgresql/globals-*.sql")
        node.succeed("pg_restore -l /var/backup/postgresql/app-*.dump | grep -F 'TABLE public answers'")
        node.succeed("test \"$(stat -c %a /var/backup/postgresql)\" = 700")
        node.succeed("systemctl list-timers postgres-backup.timer | grep -F postgres-backup")

    with subtest("port 5432 is private"):
        node.succeed("ss -Htln 'sport = :5432' | grep -F 127.0.0.1:5432")
        client.wait_for_unit("multi-user.target")
        client.fail("nc -z -w 5 node 5432")

    with subtest("the password is not in the system closure"):
        # xargs may run grep in several batches (exit 123 when one finds nothing): judge the output.
        closure = "nix-store -qR /run/current-system | xargs grep -rlsF -- "
        # Control: the search does find what is in the closure (the secret's path, in the unit).
        node.succeed(closure + secret_path + " | grep -q .")
        for value in (password, rotated):
            hits = node.succeed(closure + f"'{value}' || true").strip()
            t.assertEqual(hits, "", f"secret found in store paths: {hits}")
  '';
}
