{ nixpkgs, self }: { nodes, configurations }: { }
