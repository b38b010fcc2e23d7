"""A stand-in for nixpkgs' `lib`, enough to evaluate xnodectl's own modules with the real Nix
where nixpkgs itself cannot be had (this machine's Nix 2.8, no network). Options become their
declarations; `mkIf`/`mkMerge` are evaluated eagerly."""

STUB_LIB = r"""
let
  inert = name: { _type = "option-type"; inherit name; };
  merge = a: b:
    if builtins.isAttrs a && builtins.isAttrs b then
      builtins.zipAttrsWith (n: vs: if builtins.length vs == 1 then builtins.head vs
        else merge (builtins.elemAt vs 0) (builtins.elemAt vs 1)) [ a b ]
    else if builtins.isList a && builtins.isList b then a ++ b
    else if builtins.isString a && builtins.isString b then a + b
    else b;
  concatMap = f: l: builtins.concatLists (map f l);
  escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";
in rec {
  mkOption = attrs: attrs;
  mkIf = cond: value: if cond then value else { };
  mkMerge = builtins.foldl' merge { };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  optional = cond: x: if cond then [ x ] else [ ];
  inherit concatMap;
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  filter = builtins.filter;
  any = builtins.any;
  mapAttrs = builtins.mapAttrs;
  optionalAttrs = cond: set: if cond then set else { };
  optionalString = cond: s: if cond then s else "";
  nameValuePair = name: value: { inherit name value; };
  "mapAttrs'" = f: set: builtins.listToAttrs (map (n: f n set.${n}) (builtins.attrNames set));
  filterAttrs = pred: set: builtins.listToAttrs (concatMap
    (name: if pred name set.${name} then [ { inherit name; value = set.${name}; } ] else [ ])
    (builtins.attrNames set));
  concatStringsSep = builtins.concatStringsSep;
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
  types = {
    bool = inert "bool"; str = inert "str"; int = inert "int"; port = inert "port";
    package = inert "package";
    listOf = t: inert "listOf"; strMatching = re: inert "strMatching"; enum = l: inert "enum";
    nullOr = t: inert "nullOr"; attrsOf = t: inert "attrsOf"; submodule = m: inert "submodule";
    ints = { unsigned = inert "unsigned"; between = a: b: inert "between"; positive = inert "p"; };
  };
}
"""
