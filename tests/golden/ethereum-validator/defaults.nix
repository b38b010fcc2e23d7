# Rendered by xnodectl 0.1.0 from template 'ethereum-validator' as app 'ethereum-validator'.
# Do not edit: change the parameters and render again.
# parameters: network="mainnet", fee_recipient="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", beacon_node="http://127.0.0.1:5052", doppelganger_protection=true, graffiti="", metrics=true, metrics_port=5064
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        network = "mainnet";
        # Secret files on the node (root-only, outside the Nix store), uploaded by xnodectl deploy.
        keystoresFile = "/var/lib/xnode/secrets/ethereum-validator/keystores";
        passwordFile = "/var/lib/xnode/secrets/ethereum-validator/keystore_password";
        # Persistent state (systemd StateDirectory, never cleaned by systemd or by xnodectl): the
        # slashing protection database is <dataDir>/validators/slashing_protection.sqlite.
        dataDir = "/var/lib/lighthouse-validator/${network}";
        validatorsDir = "${dataDir}/validators";
        slashingDb = "${validatorsDir}/slashing_protection.sqlite";
        # Written once the database has existed; from then on a missing database stops the service.
        slashingMarker = "${dataDir}/.slashing-protection-initialized";
        # Unpacked keystores: tmpfs, owned by the service's DynamicUser, 0700, removed on stop.
        keysDir = "/run/lighthouse-validator/keystores";

        # The exact lighthouse command line. --init-slashing-protection lets lighthouse create the
        # database on the first start and register keys added to the keystores secret later; the
        # marker check in the start script guards against a database that went missing.
        vcArgs = [
          "validator_client"
          "--network" network
          "--datadir" dataDir
          "--beacon-nodes" "http://127.0.0.1:5052"
          "--suggested-fee-recipient" "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
          "--disable-auto-discover"
          "--init-slashing-protection"
          "--enable-doppelganger-protection"
          "--metrics"
          "--metrics-address" "127.0.0.1"
          "--metrics-port" (toString 5064)
        ];
      in
      {
        # nixpkgs nixos/lib/systemd-unit-options.nix (description, wantedBy, after, wants, path, script,
        # postStart, startLimitIntervalSec, serviceConfig). Not nixpkgs' services.lighthouse.validator
        # (nixos/modules/services/blockchain/ethereum/lighthouse.nix): it takes extra flags as one
        # unquoted string and shares services.lighthouse.network with the beacon node.
        systemd.services.lighthouse-validator = {
          description = "Lighthouse validator client (${network})";
          wantedBy = [ "multi-user.target" ];
          wants = [ "network-online.target" ];
          after = [ "network-online.target" "lighthouse-beacon.service" ];
          path = [ pkgs.coreutils pkgs.gnutar pkgs.jq ];
          # Keys missing (not yet uploaded) or a beacon node that is down must not exhaust systemd's
          # start limit: keep retrying every 10 s.
          startLimitIntervalSec = 0;

          serviceConfig = {
            DynamicUser = true;
            StateDirectory = "lighthouse-validator";
            StateDirectoryMode = "0700";
            RuntimeDirectory = "lighthouse-validator";
            RuntimeDirectoryMode = "0700";
            # Root-only secret files (uploaded by xnodectl deploy); systemd hands the unit private copies.
            LoadCredential = [
              "keystores:${keystoresFile}"
              "keystore_password:${passwordFile}"
            ];
            Restart = "on-failure";
            RestartSec = "10s";
            # Exit 78 (EX_CONFIG) = the slashing database is missing: retrying cannot fix that.
            RestartPreventExitStatus = 78;
            UMask = "0077";
            # Hardening: the client needs its state, its runtime directory and outbound TCP.
            CapabilityBoundingSet = "";
            LockPersonality = true;
            NoNewPrivileges = true;
            PrivateDevices = true;
            PrivateTmp = true;
            ProtectClock = true;
            ProtectControlGroups = true;
            ProtectHome = true;
            ProtectHostname = true;
            ProtectKernelLogs = true;
            ProtectKernelModules = true;
            ProtectKernelTunables = true;
            ProtectProc = "invisible";
            ProtectSystem = "strict";
            RemoveIPC = true;
            RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
            RestrictNamespaces = true;
            RestrictRealtime = true;
            RestrictSUIDSGID = true;
            SystemCallArchitectures = "native";
            SystemCallFilter = [ "@system-service" "~@privileged" ];
          };

          script = ''
            set -euo pipefail
            src="$CREDENTIALS_DIRECTORY/keystores"
            password="$CREDENTIALS_DIRECTORY/keystore_password"
            mkdir -p ${validatorsDir}
            rm -rf ${keysDir} ${keysDir}.unpack
            mkdir -p ${keysDir} ${keysDir}.unpack

            # One keystore JSON, or a tar of them (members flattened, nothing outside the directory).
            first=$(tr -d ' \t\r\n' < "$src" | head -c 1 || true)
            if [ "$first" = "{" ]; then
              cp "$src" ${keysDir}.unpack/keystore.json
            elif ! tar -xf "$src" -C ${keysDir}.unpack --no-same-owner --no-same-permissions \
                --wildcards '*.json' --transform 's,.*/,,'; then
              echo "the keystores secret is neither a keystore JSON file nor a tar archive of *.json files" >&2
              exit 1
            fi

            # validator_definitions.yml, regenerated from the keystores on every start. Keystores are
            # renamed after their public key, which also drops duplicates.
            defs=${validatorsDir}/validator_definitions.yml
            echo "---" > "$defs.new"
            count=0
            for file in ${keysDir}.unpack/*.json; do
              [ -f "$file" ] || continue
              pubkey=$(jq -r 'if (.crypto | type) == "object" and (.pubkey | type) == "string"
                              then .pubkey else "" end' "$file" 2>/dev/null || true)
              pubkey=''${pubkey#0x}
              if ! [[ "$pubkey" =~ ^[0-9a-fA-F]{96}$ ]]; then
                echo "ignoring $(basename "$file"): not an EIP-2335 keystore" >&2
                continue
              fi
              if [ ! -e ${keysDir}/0x$pubkey.json ]; then
                mv "$file" ${keysDir}/0x$pubkey.json
                printf -- '- enabled: true\n  voting_public_key: "0x%s"\n  type: local_keystore\n  voting_keystore_path: %s\n  voting_keystore_password_path: %s\n' \
                  "$pubkey" "${keysDir}/0x$pubkey.json" "$password" >> "$defs.new"
                count=$((count + 1))
              fi
            done
            rm -rf ${keysDir}.unpack
            if [ "$count" -eq 0 ]; then
              echo "the keystores secret holds no EIP-2335 keystore" >&2
              exit 1
            fi
            mv -f "$defs.new" "$defs"
            echo "loaded $count validator keystore(s)"

            # Slashing protection must never silently start over.
            if [ -e ${slashingDb} ]; then
              touch ${slashingMarker}
            elif [ -e ${slashingMarker} ]; then
              echo "slashing protection database ${slashingDb} is missing although this validator ran here before; refusing to start (restore it, or import an EIP-3076 interchange file with 'lighthouse account validator slashing-protection import')" >&2
              exit 78
            fi

            exec ${pkgs.lighthouse}/bin/lighthouse ${lib.escapeShellArgs vcArgs}
          '';

          # The first start creates the database: record that it exists as soon as it does, so a later
          # loss is caught even if the client never restarts cleanly in between.
          postStart = ''
            for _ in $(seq 60); do
              if [ -e ${slashingDb} ]; then
                touch ${slashingMarker}
                exit 0
              fi
              sleep 1
            done
          '';
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ ];
  networking.firewall.allowedUDPPorts = [ ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.ethereum-validator = { template = "ethereum-validator"; health = [ { kind = "systemd"; target = "lighthouse-validator.service"; status = 200; timeout = 120; } ]; secrets = [ { name = "keystores"; path = "/var/lib/xnode/secrets/ethereum-validator/keystores"; owner = "root"; group = "root"; } { name = "keystore_password"; path = "/var/lib/xnode/secrets/ethereum-validator/keystore_password"; owner = "root"; group = "root"; } ]; ports = [ { port = 5064; protocol = "tcp"; public = false; purpose = "lighthouse validator client Prometheus metrics at /metrics (127.0.0.1)"; metrics = true; } ]; };
}
