# The ONE stand-in for nixpkgs `lib` in xnodectl's tests (this machine's Nix 2.8 cannot evaluate
# nixpkgs). Everything it offers follows the real lib (nixpkgs lib/modules.nix, lib/options.nix,
# lib/types.nix, lib/strings.nix, lib/lists.nix, lib/attrsets.nix): properties stay markers
# (`mkIf` is `{ _type = "if"; condition; content; }`, never evaluated eagerly), priorities are the
# real numbers, and shell quoting is the real one. What it lacks it does not fake: a function that
# is missing is a missing attribute, so a module that needs more fails loudly here.
#
# Types are descriptors with the real `name`, plus `json`: their shape as data, which the option
# check (tests/optioncheck.py) compares with facts/nixos-options.json.
let
  b = builtins;
  concatMap = f: l: b.concatLists (map f l);
  filterAttrs = pred: set: b.listToAttrs (concatMap
    (name: if pred name set.${name} then [ { inherit name; value = set.${name}; } ] else [ ])
    (b.attrNames set));
  mapAttrsToList = f: set: map (n: f n set.${n}) (b.attrNames set);
  escapeShellArg = arg:
    let string = toString arg; in
    # lib/strings.nix: bare when only safe characters, else single-quoted with ' as '\''
    if b.match "[[:alnum:],._+:@%/-]+" string == null
    then "'${b.replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else string;
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOrder = priority: content: { _type = "order"; inherit priority content; };
  isDerivation = v: b.isAttrs v && (v.type or null) == "derivation";

  mkType = name: json: extra:
    { _type = "option-type"; inherit name json; description = name; getSubOptions = _: { }; } // extra;
  simple = name: mkType name { t = name; } { };
  submoduleOf = m:
    let
      mod = if b.isFunction m then m { name = "<name>"; config = { }; lib = self; } else m;
      opts = mod.options or { };
    in
    mkType "submodule" { t = "submodule"; options = optionsJson opts; }
      { options = opts; getSubOptions = prefix: withLoc prefix opts; };
  # An options tree with each option's `loc`, as lib/modules.nix gives getSubOptions' result.
  withLoc = prefix: tree:
    if (tree._type or null) == "option" then tree // { loc = prefix; }
    else b.mapAttrs (n: v: withLoc (prefix ++ [ n ]) v) tree;
  # An options tree -> { "<a.b>" = type json } (the declarations a submodule carries).
  optionsJson = tree:
    let
      go = prefix: t: if (t._type or null) == "option"
        then [ { name = prefix; value = (t.type or (simple "unspecified")).json; } ]
        else b.concatLists (mapAttrsToList (n: v: go (if prefix == "" then n else "${prefix}.${n}") v) t);
    in
    b.listToAttrs (go "" tree);

  self = {
    # lib/modules.nix
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    inherit mkOverride mkOrder;
    mkOptionDefault = mkOverride 1500;
    mkDefault = mkOverride 1000;
    mkImageMediaOverride = mkOverride 60;
    mkForce = mkOverride 50;
    mkVMOverride = mkOverride 10;
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;
    # lib/options.nix
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: self.mkOption {
      default = false; example = true; description = "Whether to enable ${name}.";
      type = self.types.bool;
    };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    # lib/lists.nix
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: l: if cond then l else [ ];
    inherit concatMap;
    concatLists = b.concatLists;
    filter = b.filter;
    any = b.any;
    all = b.all;
    elem = b.elem;
    unique = b.foldl' (acc: x: if b.elem x acc then acc else acc ++ [ x ]) [ ];
    # lib/attrsets.nix
    inherit filterAttrs mapAttrsToList isDerivation;
    mapAttrs = b.mapAttrs;
    "mapAttrs'" = f: set: b.listToAttrs (mapAttrsToList f set);
    nameValuePair = name: value: { inherit name value; };
    genAttrs = names: f: b.listToAttrs (map (n: { name = n; value = f n; }) names);
    optionalAttrs = cond: set: if cond then set else { };
    attrNames = b.attrNames;
    attrValues = b.attrValues;
    # lib/strings.nix
    concatStrings = b.concatStringsSep "";
    concatStringsSep = b.concatStringsSep;
    concatMapStrings = f: l: b.concatStringsSep "" (map f l);
    concatMapStringsSep = sep: f: l: b.concatStringsSep sep (map f l);
    optionalString = cond: s: if cond then s else "";
    hasPrefix = pre: s: b.substring 0 (b.stringLength pre) s == pre;
    hasSuffix = suf: s:
      let ls = b.stringLength s; lf = b.stringLength suf; in
      lf <= ls && b.substring (ls - lf) lf s == suf;
    hasInfix = inf: s: b.match ".*${self.escapeRegex inf}.*" "${s}" != null;
    removeSuffix = suf: s:
      if self.hasSuffix suf s then b.substring 0 (b.stringLength s - b.stringLength suf) s else s;
    escapeRegex = b.replaceStrings
      [ "\\" "[" "{" "(" ")" "^" "$" "?" "*" "+" "|" "." ]
      [ "\\\\" "\\[" "\\{" "\\(" "\\)" "\\^" "\\$" "\\?" "\\*" "\\+" "\\|" "\\." ];
    inherit escapeShellArg;
    escapeShellArgs = args: b.concatStringsSep " " (map escapeShellArg args);
    makeBinPath = paths: b.concatStringsSep ":" (map (p: "${p}/bin") paths);
    # lib/meta.nix: getExe needs meta.mainProgram, as the real one (which warns, then guesses).
    getExe = p: "${p}/bin/${p.meta.mainProgram or (b.throw "getExe: ${p.name or "?"} has no meta.mainProgram")}";
    # lib/types.nix
    # Names, descriptions, nestedTypes, functor.payload and getSubOptions as lib/types.nix has
    # them (facts/types.nix reads them the same way from the real lib in CI).
    types = {
      bool = simple "bool"; str = simple "str"; int = simple "int";
      port = mkType "unsignedInt16" { t = "int"; min = 0; max = 65535; }
        { description = "16 bit unsigned integer; between 0 and 65535 (both inclusive)"; };
      package = simple "package"; path = simple "path";
      lines = mkType "separatedString" { t = "lines"; } { description = "strings concatenated with \"\\n\""; };
      anything = simple "anything"; attrs = simple "attrs"; raw = simple "raw";
      unspecified = simple "unspecified"; deferredModule = simple "deferredModule";
      listOf = t: mkType "listOf" { t = "listOf"; elem = t.json; }
        { nestedTypes.elemType = t; getSubOptions = prefix: t.getSubOptions (prefix ++ [ "*" ]); };
      attrsOf = t: mkType "attrsOf" { t = "attrsOf"; elem = t.json; }
        { nestedTypes.elemType = t; getSubOptions = prefix: t.getSubOptions (prefix ++ [ "<name>" ]); };
      lazyAttrsOf = t: mkType "lazyAttrsOf" { t = "attrsOf"; elem = t.json; }
        { nestedTypes.elemType = t; getSubOptions = prefix: t.getSubOptions (prefix ++ [ "<name>" ]); };
      nullOr = t: mkType "nullOr" { t = "nullOr"; elem = t.json; }
        { nestedTypes.elemType = t; getSubOptions = t.getSubOptions; };
      enum = values: mkType "enum" { t = "enum"; inherit values; } { functor.payload.values = values; };
      strMatching = pattern: mkType "strMatching ${b.toJSON pattern}" { t = "strMatching"; inherit pattern; }
        { description = "string matching the pattern ${pattern}"; };
      either = l: r: mkType "either"
        { t = "oneOf"; of = (if l.json.t == "oneOf" && l.name == "either" then l.json.of else [ l.json ]) ++ [ r.json ]; }
        { nestedTypes = { left = l; right = r; }; };
      oneOf = ts: b.foldl' self.types.either (b.head ts) (b.tail ts);
      submodule = submoduleOf;
      ints = {
        unsigned = mkType "unsignedInt" { t = "int"; min = 0; } { description = "unsigned integer, meaning >=0"; };
        positive = mkType "positiveInt" { t = "int"; min = 1; } { description = "positive integer, meaning >0"; };
        between = lo: hi: mkType "intBetween" { t = "int"; min = lo; max = hi; }
          { description = "integer between ${toString lo} and ${toString hi} (both inclusive)"; };
      };
    };
    # lib/strings.nix, lib/trivial.nix (what facts/types.nix needs besides the above)
    toInt = str: let m = b.match "[[:space:]]*(-?[0-9]+)[[:space:]]*" str; in
      if m == null then b.throw "toInt: not an integer: ${str}" else b.fromJSON (b.head m);
    removePrefix = pre: s: if self.hasPrefix pre s then b.substring (b.stringLength pre) (-1) s else s;
    splitString = sep: s: b.filter b.isString (b.split (self.escapeRegex sep) s);
  };
in
self
