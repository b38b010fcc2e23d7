# Stand-in for nixpkgs nixos/tests/ssh-keys.nix (the stand-in pkgs.path): same attribute names,
# placeholder text (the option check only needs strings and file paths of the right types).
pkgs: {
  snakeOilPrivateKey = pkgs.writeText "privkey.snakeoil" "stand-in private key";
  snakeOilPublicKey = "ecdsa-sha2-nistp256 AAAAE2Vj stand-in";
  snakeOilEd25519PrivateKey = pkgs.writeText "privkey.snakeoil-ed25519" "stand-in private key";
  snakeOilEd25519PublicKey = "ssh-ed25519 AAAAC3Nz stand-in";
}
