# Rendered by xnodectl 0.1.0 from template 'ethereum-node' as app 'ethereum-node'.
# Do not edit: change the parameters and render again.
# parameters: network="mainnet", checkpoint_sync_url="", sync_mode="snap", history="postmerge", tx_index_blocks=2350000, beacon_archive=false, prune_blobs=true, rpc_apis=[ "eth" "net" "web3" ], max_peers=50, open_rpc=false, open_beacon_api=false, metrics=true, p2p_port=30303, rpc_port=8545, ws_port=8546, authrpc_port=8551, geth_metrics_port=6060, beacon_p2p_port=9000, beacon_quic_port=9001, beacon_api_port=5052, beacon_metrics_port=5054
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        # The Engine API secret: written on the node by ethereum-jwt.service, root-only (0400 in a 0700
        # directory), outside the Nix store. geth and lighthouse run as DynamicUsers and cannot read it
        # directly: each gets a private copy through systemd LoadCredential.
        jwtFile = "/var/lib/ethereum-jwt/jwt.hex";
        gethUnit = "geth-mainnet";
        listenRpc = "127.0.0.1";
        listenBeaconApi = "127.0.0.1";
        checkpointSyncUrl = "https://mainnet.checkpoint.sigp.io";
      in
      {
        # nixpkgs nixos/lib/systemd-unit-options.nix (description, wantedBy, before, serviceConfig, script)
        systemd.services.ethereum-jwt = {
          description = "Engine API JWT secret shared by geth and lighthouse";
          wantedBy = [ "multi-user.target" ];
          before = [ "${gethUnit}.service" "lighthouse-beacon.service" ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            StateDirectory = "ethereum-jwt";
            StateDirectoryMode = "0700";
            UMask = "0077";
          };
          # Keep a valid secret across restarts and redeploys; replace a missing or malformed one. The
          # new file is written next to the old one and renamed, so a reader never sees half a secret.
          script = ''
            set -eu
            f=${jwtFile}
            if ! grep -Eqx '(0x)?[0-9a-fA-F]{64}' "$f" 2>/dev/null; then
              tmp=$(mktemp "$f.XXXXXX")
              ${pkgs.openssl}/bin/openssl rand -hex 32 > "$tmp"
              chmod 0400 "$tmp"
              mv -f "$tmp" "$f"
            fi
            chmod 0400 "$f"
          '';
        };

        # nixpkgs nixos/modules/services/blockchain/ethereum/geth.nix (services.geth.<name>.*)
        services.geth.mainnet = {
          enable = true;
          network = null; # geth.nix: null = mainnet
          port = 30303;
          syncmode = "snap";
          gcmode = "full";
          maxpeers = 50;
          http = {
            enable = true;
            address = listenRpc;
            port = 8545;
            apis = [ "eth" "net" "web3" ];
          };
          websocket = {
            enable = true;
            address = listenRpc;
            port = 8546;
            apis = [ "eth" "net" "web3" ];
          };
          # The Engine API is always on in geth; it stays on loopback whatever the user opens.
          authrpc = {
            address = "127.0.0.1";
            port = 8551;
            vhosts = [ "localhost" ];
            # geth.nix passes this string as --authrpc.jwtsecret; the absolute credentials path works
            # whether the module starts geth from `script` or from ExecStart (%d is ExecStart-only).
            jwtsecret = "/run/credentials/${gethUnit}.service/jwt";
          };
          metrics = {
            enable = true;
            address = "127.0.0.1";
            port = 6060;
          };
          # geth.nix extraArgs (listOf str, shell-escaped by the module). Flags of geth >= 1.16.
          extraArgs = [
            "--history.chain"
            "postmerge"
            "--history.transactions"
            (toString 2350000)
          ];
        };

        # nixpkgs nixos/lib/systemd-unit-options.nix (requires, after, serviceConfig.LoadCredential): the
        # list form merges with anything else the module or the operator adds.
        systemd.services."geth-mainnet" = {
          requires = [ "ethereum-jwt.service" ];
          after = [ "ethereum-jwt.service" ];
          serviceConfig.LoadCredential = [ "jwt:${jwtFile}" ];
        };

        # nixpkgs nixos/modules/services/blockchain/ethereum/lighthouse.nix (services.lighthouse.*)
        services.lighthouse = {
          network = "mainnet";
          beacon = {
            enable = true;
            address = "0.0.0.0"; # p2p listen address; the p2p ports are public
            port = 9000;
            openFirewall = false; # the rendered wrapper opens exactly the declared public ports
            execution = {
              address = "127.0.0.1";
              port = 8551;
              # lighthouse.nix turns this into LoadCredential=LIGHTHOUSE_JWT:<path> and passes
              # --execution-jwt $CREDENTIALS_DIRECTORY/LIGHTHOUSE_JWT.
              jwtPath = jwtFile;
            };
            http = {
              enable = true;
              address = listenBeaconApi;
              port = 5052;
            };
            metrics = {
              enable = true;
              address = "127.0.0.1";
              port = 5054;
            };
            # lighthouse.nix beacon.extraArgs is one string pasted into the start command: every
            # argument is shell-quoted here.
            extraArgs = lib.escapeShellArgs ([
              "--quic-port"
              (toString 9001)
              "--checkpoint-sync-url"
              checkpointSyncUrl
            ]);
          };
        };

        # nixpkgs nixos/lib/systemd-unit-options.nix (requires, after, wants, startLimitIntervalSec,
        # serviceConfig.RestartSec). A checkpoint server that is briefly unreachable at boot must not
        # trip systemd's start limit and leave the beacon node failed for good: retry every 30 s.
        systemd.services.lighthouse-beacon = {
          requires = [ "ethereum-jwt.service" ];
          wants = [ "${gethUnit}.service" ];
          after = [ "ethereum-jwt.service" "${gethUnit}.service" ];
          startLimitIntervalSec = 0;
          serviceConfig.RestartSec = "30s";
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ 9000 30303 ];
  networking.firewall.allowedUDPPorts = [ 9000 9001 30303 ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.ethereum-node = { template = "ethereum-node"; health = [ { kind = "systemd"; target = "ethereum-jwt.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "geth-mainnet.service"; status = 200; timeout = 60; } { kind = "systemd"; target = "lighthouse-beacon.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "8545"; status = 200; timeout = 60; } { kind = "tcp"; target = "8551"; status = 200; timeout = 120; } { kind = "http"; target = "http://127.0.0.1:5052/eth/v1/node/version"; status = 200; timeout = 900; } ]; secrets = [ ]; ports = [ { port = 30303; protocol = "tcp"; public = true; purpose = "geth p2p (devp2p TCP, discovery UDP)"; metrics = false; } { port = 30303; protocol = "udp"; public = true; purpose = "geth p2p (devp2p TCP, discovery UDP)"; metrics = false; } { port = 9000; protocol = "tcp"; public = true; purpose = "lighthouse p2p (libp2p TCP, discv5 UDP)"; metrics = false; } { port = 9000; protocol = "udp"; public = true; purpose = "lighthouse p2p (libp2p TCP, discv5 UDP)"; metrics = false; } { port = 9001; protocol = "udp"; public = true; purpose = "lighthouse p2p (QUIC)"; metrics = false; } { port = 8545; protocol = "tcp"; public = false; purpose = "geth JSON-RPC over HTTP (127.0.0.1 unless open_rpc)"; metrics = false; } { port = 8546; protocol = "tcp"; public = false; purpose = "geth JSON-RPC over WebSocket (127.0.0.1 unless open_rpc)"; metrics = false; } { port = 8551; protocol = "tcp"; public = false; purpose = "geth Engine API, JWT-authenticated (127.0.0.1 only)"; metrics = false; } { port = 5052; protocol = "tcp"; public = false; purpose = "lighthouse beacon REST API (127.0.0.1 unless open_beacon_api)"; metrics = false; } { port = 6060; protocol = "tcp"; public = false; purpose = "geth Prometheus metrics at /debug/metrics/prometheus (127.0.0.1)"; metrics = true; metricsPath = "/debug/metrics/prometheus"; } { port = 5054; protocol = "tcp"; public = false; purpose = "lighthouse beacon Prometheus metrics at /metrics (127.0.0.1)"; metrics = true; } ]; };
}
