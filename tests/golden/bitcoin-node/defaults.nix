# Rendered by xnodectl 0.1.0 from template 'bitcoin-node' as app 'bitcoin-node'.
# Do not edit: change the parameters and render again.
# parameters: network="mainnet", prune=false, prune_mib=550, dbcache_mib=450, p2p_port=8333, open_p2p=true, rpc_port=8332
{ ... }:
{
  imports = [
    (
      { config, lib, pkgs, ... }:
      let
        network = "mainnet";
        # bitcoind has one option for testnet3 only; every network is chosen on the command line instead,
        # so the generated bitcoin.conf has no [section] and its top-level lines apply to any network.
        networkFlags = {
          mainnet = [ ];
          testnet = [ "-testnet" ];
          testnet4 = [ "-testnet4" ];
          signet = [ "-signet" ];
          regtest = [ "-regtest" ];
        }.${network};
        includeDir = "/run/xnode-bitcoind";
        # Runs as the bitcoind user before bitcoind: checks the rpcauth secret (a systemd credential,
        # read by PID 1 from the root-only secret file) and writes it as a config include in a runtime
        # directory. The hashes never enter the store or the process list.
        writeRpcauth = pkgs.writeShellScript "bitcoind-rpcauth" ''
          set -eu
          umask 077
          tmp=${includeDir}/rpcauth.conf.tmp
          : > "$tmp"
          n=0
          while IFS= read -r line || [ -n "$line" ]; do
            case "$line" in
              "" | "#"*) continue ;;
            esac
            if ! printf '%s\n' "$line" | grep -Eq '^[^:[:space:]]+:[0-9a-f]+[$][0-9a-f]{64}$'; then
              echo "rpcauth secret: every line must be user:salt\$hash (share/rpcauth/rpcauth.py)" >&2
              exit 1
            fi
            printf 'rpcauth=%s\n' "$line" >> "$tmp"
            n=$((n + 1))
          done < "$CREDENTIALS_DIRECTORY/rpcauth"
          if [ "$n" -eq 0 ]; then
            echo "rpcauth secret holds no user" >&2
            exit 1
          fi
          mv "$tmp" ${includeDir}/rpcauth.conf
        '';
      in
      {
        # nixpkgs nixos/modules/services/networking/bitcoind.nix (services.bitcoind.<name>.enable, user,
        # port, rpc.port, prune, dbCache, extraConfig, extraCmdlineOptions)
        services.bitcoind.mainnet = {
          enable = true;
          user = "bitcoind";
          port = 8333;
          rpc.port = 8332;
          dbCache = 450;
          # Bitcoin Core (src/common/config.cpp, ReadConfigFiles) takes includeconf only from a config
          # file, reads top-level ones for every chain, keeps an absolute path as is and refuses to start
          # if the file is missing.
          extraConfig = ''
            includeconf=${includeDir}/rpcauth.conf
          '';
          extraCmdlineOptions = networkFlags ++ [
            # JSON-RPC on loopback only (both flags are needed: -rpcbind alone is ignored).
            "-rpcbind=127.0.0.1"
            "-rpcallowip=127.0.0.1"
            "-printtoconsole"
          ];
        };

        # nixpkgs nixos/modules/system/boot/systemd.nix (systemd.services.<name>.serviceConfig); list
        # values merge with the bitcoind module's own.
        systemd.services."bitcoind-mainnet".serviceConfig = {
          LoadCredential = [ "rpcauth:${ "/var/lib/xnode/secrets/bitcoin-node/rpcauth" }" ];
          RuntimeDirectory = [ "xnode-bitcoind" ];
          ExecStartPre = [ writeRpcauth ];
        };
      }
    )
  ];

  # Ports the template declares public, opened only where its parameters ask.
  networking.firewall.allowedTCPPorts = [ 8333 ];
  networking.firewall.allowedUDPPorts = [ ];

  # What the deploy engine reads back: health probes, secret files, ports.
  xnode.apps.bitcoin-node = { template = "bitcoin-node"; health = [ { kind = "systemd"; target = "bitcoind-mainnet.service"; status = 200; timeout = 60; } { kind = "tcp"; target = "8332"; status = 200; timeout = 300; } { kind = "http"; target = "http://127.0.0.1:8332/"; status = 405; timeout = 300; } ]; secrets = [ { name = "rpcauth"; path = "/var/lib/xnode/secrets/bitcoin-node/rpcauth"; owner = "root"; group = "root"; } ]; ports = [ { port = 8333; protocol = "tcp"; public = true; purpose = "Bitcoin p2p"; metrics = false; } { port = 8332; protocol = "tcp"; public = false; purpose = "JSON-RPC (127.0.0.1 only)"; metrics = false; } ]; };
}
