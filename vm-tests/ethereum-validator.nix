# VM test of the `ethereum-validator` template (golden example render: sepolia, local beacon node
# URL, graffiti, metrics). No network and no beacon node, so nothing is signed; what is proven:
# - two EIP-2335 keystores, generated inside the VM at test time with fresh random BLS keys (no key
#   is ever committed), plus a non-keystore decoy, delivered as the tar-archive secret, and their
#   password as the second secret, are decrypted by lighthouse validator_client;
# - the client runs as its DynamicUser with the expected flags (fee recipient, doppelganger
#   protection, graffiti, beacon node, metrics on loopback, network);
# - the slashing protection database is created in the state directory with both validators
#   registered, and survives restarts (same file, same registrations);
# - once it has existed, a missing database stops the service with exit 78 instead of starting
#   over; restoring it brings the client back;
# - unpacked keys live in /run/lighthouse-validator (0700) and vanish when the service stops;
# - the keystore password is nowhere in the system closure.
{ pkgs, self }:
let
  network = "sepolia";
  secrets = "/var/lib/xnode/secrets/ethereum-validator";
  dataDir = "/var/lib/lighthouse-validator/${network}";
  db = "${dataDir}/validators/slashing_protection.sqlite";

  python = pkgs.python3.withPackages (ps: [ ps.py-ecc ps.pycryptodome ]);
  # EIP-2335 keystores (scrypt, AES-128-CTR) for fresh random BLS secret keys.
  makeKeystores = pkgs.writeScript "make-test-keystores" ''
    #!${python}/bin/python3
    """make-test-keystores OUT_DIR COUNT PASSWORD_FILE: write COUNT keystores, print pubkeys."""
    import hashlib, json, os, secrets, sys, uuid
    from Crypto.Cipher import AES
    from py_ecc.bls import G2ProofOfPossession as bls
    from py_ecc.optimized_bls12_381 import curve_order

    out, count = sys.argv[1], int(sys.argv[2])
    password = open(sys.argv[3], "rb").read().strip()  # ASCII: NFKD and control-code stripping are no-ops
    os.makedirs(out, exist_ok=True)
    for index in range(count):
        sk = secrets.randbelow(curve_order - 1) + 1
        pubkey = bytes(bls.SkToPk(sk)).hex()
        salt, iv = os.urandom(32), os.urandom(16)
        n, r, p = 2**14, 8, 1  # lighthouse warns below 2**18 but accepts; keeps the test fast
        dk = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2**26)
        cipher = AES.new(dk[:16], AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(sk.to_bytes(32, "big"))
        keystore = {
            "crypto": {
                "kdf": {"function": "scrypt", "params": {"dklen": 32, "n": n, "r": r, "p": p, "salt": salt.hex()}, "message": ""},
                "checksum": {"function": "sha256", "params": {}, "message": hashlib.sha256(dk[16:32] + cipher).hexdigest()},
                "cipher": {"function": "aes-128-ctr", "params": {"iv": iv.hex()}, "message": cipher.hex()},
            },
            "pubkey": pubkey,
            "path": f"m/12381/3600/{index}/0/0",
            "uuid": str(uuid.uuid4()),
            "version": 4,
        }
        with open(os.path.join(out, f"keystore-m_12381_3600_{index}_0_0.json"), "w") as f:
            json.dump(keystore, f)
        print("0x" + pubkey)
  '';
in
pkgs.testers.runNixOSTest {
  name = "xnode-template-ethereum-validator";
  globalTimeout = 1200;

  nodes.machine = { pkgs, ... }: {
    imports = [ self.nixosModules.default ../tests/golden/ethereum-validator/example.nix ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # Test VMs are reached through the test driver's backdoor, not SSH.
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 2048;
    environment.systemPackages = [ pkgs.sqlite pkgs.procps pkgs.gnutar ];
  };

  testScript = builtins.readFile ./lib/probes.py + ''
    DB = "${db}"
    MARKER = "${dataDir}/.slashing-protection-initialized"
    SECRETS = "${secrets}"
    FEE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

    def registered():
        """Public keys registered in the slashing protection database. Only while the client is
        stopped: lighthouse holds the database in SQLite's exclusive locking mode."""
        rows = machine.succeed(
            f"sqlite3 -readonly {DB} \"SELECT CASE typeof(public_key) WHEN 'text' THEN public_key "
            "ELSE '0x' || lower(hex(public_key)) END FROM validators\""
        )
        return sorted(row.strip().lower() for row in rows.splitlines() if row.strip())

    machine.start()
    machine.wait_for_unit("multi-user.target")

    with subtest("keys are generated in the VM and delivered as the two secret files"):
        # What `xnodectl deploy` does with secrets/<app>/<param>: root-only files, outside the store.
        machine.succeed(
            "umask 077 && mkdir -p /root/keys && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /root/password",
            f"install -m 0400 -o root -g root /root/password {SECRETS}/keystore_password",
        )
        pubkeys = sorted(machine.succeed("${makeKeystores} /root/keys 2 /root/password").split())
        assert len(pubkeys) == 2
        # staking-deposit-cli puts deposit data next to the keystores: it must be ignored.
        machine.succeed(
            "echo '[{\"pubkey\": \"00\"}]' > /root/keys/deposit_data-1.json",
            f"tar -C /root -cf /root/keystores.tar keys && install -m 0400 /root/keystores.tar {SECRETS}/keystores",
        )
        password = machine.succeed("cat /root/password").strip()

    with subtest("the validator client starts and decrypts both keystores"):
        machine.succeed("systemctl restart lighthouse-validator.service")
        machine.wait_for_unit("lighthouse-validator.service", timeout=120)
        machine.wait_until_succeeds("journalctl -u lighthouse-validator | grep -q 'loaded 2 validator keystore(s)'")
        machine.succeed("journalctl -u lighthouse-validator | grep -q 'ignoring deposit_data-1.json'")
        defs = machine.succeed("cat ${dataDir}/validators/validator_definitions.yml")
        for pubkey in pubkeys:
            assert f'voting_public_key: "{pubkey}"' in defs, defs
        assert "voting_keystore_password_path: /run/credentials/lighthouse-validator.service/keystore_password" in defs
        t.assertEqual(machine.succeed("stat -c '%a %U' /run/lighthouse-validator").strip(), "700 lighthouse-validator")

    with subtest("lighthouse runs as its DynamicUser with the expected flags"):
        pid = machine.succeed("systemctl show -P MainPID lighthouse-validator.service").strip()
        cmd = machine.succeed(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
        for flag in (
            "validator_client",
            "--network ${network}",
            "--datadir ${dataDir}",
            "--beacon-nodes http://127.0.0.1:5052",
            f"--suggested-fee-recipient {FEE}",
            "--enable-doppelganger-protection",
            "--init-slashing-protection",
            "--disable-auto-discover",
            "--graffiti xnode",
            "--metrics-address 127.0.0.1",
            "--metrics-port 5064",
        ):
            assert flag in cmd, f"{flag} missing from: {cmd}"
        t.assertEqual(machine.succeed(f"ps -o user:32= -p {pid}").strip(), "lighthouse-validator")

    with subtest("every health probe of the template passes, for the node's deploy agent too"):
        run_health_probes(machine, "ethereum-validator")

    with subtest("the slashing protection database exists in the state directory"):
        machine.wait_until_succeeds(f"test -s {DB}", timeout=120)
        machine.wait_until_succeeds(f"test -e {MARKER}", timeout=90)
        machine.succeed("test -L /var/lib/lighthouse-validator")  # DynamicUser: /var/lib/private
        inode = machine.succeed(f"stat -L -c %i {DB}").strip()

    with subtest("the database survives restarts"):
        machine.succeed("systemctl restart lighthouse-validator.service")
        machine.wait_for_unit("lighthouse-validator.service", timeout=120)
        machine.succeed("systemctl stop lighthouse-validator.service")
        machine.fail("test -e /run/lighthouse-validator")  # unpacked keys are gone
        t.assertEqual(machine.succeed(f"stat -L -c %i {DB}").strip(), inode)
        t.assertEqual(registered(), pubkeys)
        machine.succeed("systemctl start lighthouse-validator.service")
        machine.wait_for_unit("lighthouse-validator.service", timeout=120)
        t.assertEqual(machine.succeed(f"stat -L -c %i {DB}").strip(), inode)

    with subtest("a lost database stops the client instead of starting over"):
        machine.succeed("systemctl stop lighthouse-validator.service")
        machine.succeed(f"mv {DB} /root/slashing.sqlite")
        machine.execute("systemctl start lighthouse-validator.service")
        machine.wait_until_succeeds("systemctl is-failed lighthouse-validator.service")
        t.assertEqual(machine.succeed("systemctl show -P ExecMainStatus lighthouse-validator.service").strip(), "78")
        machine.succeed("journalctl -u lighthouse-validator | grep -q 'refusing to start'")
        machine.fail(f"test -e {DB}")  # and it did not create an empty one
        machine.succeed(f"mv /root/slashing.sqlite {DB}", "systemctl reset-failed lighthouse-validator.service")
        machine.succeed("systemctl start lighthouse-validator.service")
        machine.wait_for_unit("lighthouse-validator.service", timeout=120)
        machine.succeed("systemctl stop lighthouse-validator.service")
        t.assertEqual(registered(), pubkeys)
        t.assertEqual(machine.succeed(f"stat -L -c %i {DB}").strip(), inode)

    with subtest("the keystore password is not in the system closure"):
        found = machine.succeed(
            f"nix-store -qR /run/current-system | xargs grep -rlFs -- '{password}' || true"
        ).strip()
        t.assertEqual(found, "")
  '';
}
