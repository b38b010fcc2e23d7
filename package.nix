# The xnodectl package: the CLI with nix, openssh and git on its PATH, the template catalogue and
# the node-side programs (xnode-activate, claim/sign-in services, manifest verifier).
{ lib, python3Packages, fetchPypi, nix, openssh, git, makeWrapper, src }:

let
  # siwe 4.4 breaks with abnf >= 2.4, so abnf is pinned here (sdist hashes computed from the PyPI files).
  abnf = python3Packages.buildPythonPackage rec {
    pname = "abnf";
    version = "2.3.1";
    pyproject = true;
    src = fetchPypi { inherit pname version; hash = "sha256-LT7UkMZMDihe01OE1KWI87HokwYgsJt2YChRCCeE408="; };
    build-system = with python3Packages; [ setuptools setuptools-scm ];
  };
  # siwe (EIP-4361) is not packaged in nixpkgs.
  siwe = python3Packages.buildPythonPackage rec {
    pname = "siwe";
    version = "4.4.0";
    pyproject = true;
    src = fetchPypi { inherit pname version; hash = "sha256-X9+EMlOpHXgIXx2hHtfJaVu7dD4RLaZY5jooXd8//sc="; };
    build-system = [ python3Packages.poetry-core ];
    dependencies = [ abnf ] ++ (with python3Packages; [ web3 eth-account eth-typing eth-utils pydantic typing-extensions ]);
    pythonRelaxDeps = true;
    pythonImportsCheck = [ "siwe" ];
  };
in
python3Packages.buildPythonApplication {
  pname = "xnodectl";
  version = "0.1.0";
  pyproject = true;
  inherit src;

  # nixpkgs pkgs/development/interpreters/python/mk-python-derivation.nix (build-system, dependencies)
  build-system = [ python3Packages.setuptools ];
  dependencies = with python3Packages; [
    typer
    jinja2
    pydantic
    eth-account
    eth-utils # imported directly (EIP-55, address checks)
    eth-keys # imported directly (KeystoreSigner.public_key)
    rich
    tomlkit
    # xnodectl studio: nixpkgs pkgs/development/python-modules/{starlette,uvicorn}/default.nix
    starlette
    uvicorn
  ] ++ [ siwe abnf ];

  nativeBuildInputs = [ makeWrapper ];

  # The template catalogue ships inside the package (xnodectl/templates links to templates/).
  postInstall = ''
    install -Dm755 xnodectl/data/node/xnode-activate $out/bin/xnode-activate
  '';

  makeWrapperArgs = [ "--prefix PATH : ${lib.makeBinPath [ nix openssh git ]}" ];

  pythonImportsCheck = [ "xnodectl" "xnodectl.cli" "xnodectl.studio.app" ];
  doCheck = false; # the test suite needs sshd test nodes; it runs in CI (.ci/run), not in the sandbox

  meta = {
    description = "Declarative NixOS provisioning for Xnodes";
    license = lib.licenses.mit;
    mainProgram = "xnodectl";
  };
}
