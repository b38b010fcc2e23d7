# lib/types.nix types -> the normal form of facts/nixos-options.json, and option paths (with
# `<name>` for attrsOf elements and freeform keys) -> options. Used by generate.nix with the real
# lib of the pinned nixpkgs, and by tests/test_facts.py with the stand-in lib (tests/nixlib),
# whose types carry the same names, descriptions, nestedTypes and getSubOptions.
lib:
let
  b = builtins;
  rangeOf = desc:
    let m = b.match ".*between (-?[0-9]+) and (-?[0-9]+).*" desc; in
    if m == null then { } else { min = lib.toInt (b.elemAt m 0); max = lib.toInt (b.elemAt m 1); };
  eitherParts = t: if t.name == "either" then eitherParts t.nestedTypes.left ++ eitherParts t.nestedTypes.right else [ t ];
  subOptions = t: loc:
    let
      tree = t.getSubOptions loc;
      go = prefix: node:
        if (node._type or null) == "option" then
          (if node.type.name == "submodule" then go prefix (node.type.getSubOptions node.loc)
           else [ { name = lib.concatStringsSep "." prefix; value = typeJson node.type; } ])
        else lib.concatMap (n: go (prefix ++ [ n ]) node.${n})
          (b.filter (n: n != "_module") (b.attrNames node));
      free = tree._module.freeformType.value or null;
    in
    b.listToAttrs (go [ ] tree) // lib.optionalAttrs (free != null) { "<name>" = typeJson (elemOf free); };
  elemOf = t: if b.elem t.name [ "attrsOf" "lazyAttrsOf" ] then t.nestedTypes.elemType else t;

  # lib/types.nix -> the normal form of facts/nixos-options.json.
  typeJson = t:
    let n = t.name; d = t.description or ""; in
    if b.elem n [ "str" "nonEmptyStr" "singleLineStr" "string" ] then { t = "str"; }
    else if n == "separatedString" then (if lib.hasInfix "\\n" d then { t = "lines"; } else { t = "str"; })
    else if n == "lines" then { t = "lines"; }
    else if n == "bool" then { t = "bool"; }
    else if n == "float" then { t = "float"; }
    else if n == "int" || n == "signedInt" then { t = "int"; }
    else if n == "unsignedInt" then { t = "int"; min = 0; }
    else if n == "positiveInt" then { t = "int"; min = 1; }
    else if lib.hasPrefix "unsignedInt" n || lib.hasPrefix "signedInt" n || n == "intBetween" || n == "port"
    then { t = "int"; } // rangeOf d
    else if b.elem n [ "path" "pathInStore" ] then { t = "path"; }
    else if b.elem n [ "package" "shellPackage" ] then { t = "package"; }
    else if b.elem n [ "attrs" "anything" "raw" "unspecified" "deferredModule" ] then { t = n; }
    else if n == "enum" then { t = "enum"; values = t.functor.payload.values or t.functor.payload; }
    else if lib.hasPrefix "strMatching" n then { t = "strMatching"; pattern = lib.removePrefix "string matching the pattern " d; }
    else if n == "listOf" || n == "nonEmptyListOf" then { t = "listOf"; elem = typeJson t.nestedTypes.elemType; }
    else if n == "attrsOf" || n == "lazyAttrsOf" then { t = "attrsOf"; elem = typeJson t.nestedTypes.elemType; }
    else if n == "nullOr" then { t = "nullOr"; elem = typeJson t.nestedTypes.elemType; }
    else if n == "either" then { t = "oneOf"; of = map typeJson (eitherParts t); }
    else if n == "coercedTo" then { t = "coercedTo"; from = typeJson t.nestedTypes.coercedType; to = typeJson t.nestedTypes.finalType; }
    else if n == "unique" || n == "uniq" then typeJson t.nestedTypes.elemType
    else if n == "submodule" then { t = "submodule"; options = subOptions t [ ]; }
    else { t = "anything"; nixType = n; };

  # "a.b.<name>.c" -> the option (or a pseudo-option for attrsOf elements and freeform keys).
  find = node: loc: rest:
    if rest == [ ] then node
    else
      let k = b.head rest; more = b.tail rest; in
      if (node._type or null) == "option" then
        let t = node.type; in
        if k == "<name>" && b.elem t.name [ "attrsOf" "lazyAttrsOf" ] then
          (if t.nestedTypes.elemType.name == "submodule"
           then find (t.getSubOptions loc) (loc ++ [ k ]) more
           else find { _type = "option"; type = t.nestedTypes.elemType; loc = loc ++ [ k ]; } (loc ++ [ k ]) more)
        else if t.name == "submodule" then find (t.getSubOptions loc) loc rest
        else throw "facts: ${lib.concatStringsSep "." (loc ++ rest)}: ${lib.concatStringsSep "." loc} is a ${t.name}, not a set of options"
      else if node ? ${k} then find node.${k} (loc ++ [ k ]) more
      else if k == "<name>" && (node._module.freeformType.value or null) != null then
        find { _type = "option"; type = elemOf node._module.freeformType.value; loc = loc ++ [ k ]; } (loc ++ [ k ]) more
      else throw "facts: no option ${lib.concatStringsSep "." (loc ++ rest)} in this nixpkgs";
in
{
  inherit typeJson find;
}
