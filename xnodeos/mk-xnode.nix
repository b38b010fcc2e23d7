{ nixpkgs, self }: args: throw "mkXnode: not yet implemented"
