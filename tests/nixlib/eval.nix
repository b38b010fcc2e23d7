# A stand-in for nixpkgs' module system (lib/modules.nix evalModules), for the option check and
# the module tests. It merges lazily, level by level, as the real one does: properties (mkIf,
# mkMerge, mkOverride, mkOrder) are pushed down into attribute sets without evaluating
# conditions; at an option, inactive definitions are dropped, only the strongest priority is
# kept, lists are concatenated in mkOrder order, attribute sets merged. Which paths are options
# comes from the modules' own declarations plus `schema` (facts/nixos-options.json: the nixpkgs
# options, with `<name>` for attrsOf-submodule elements); a defined path that is neither is
# reported as unknown, as the real module system refuses it.
#
# evalModules { modules, schema ? { }, specialArgs ? { } } ->
#   { config; options (declared here: "a.b" = type json); report (every defined option:
#     { loc; known; decl; defs = [ { file; active; value } ] }) }
{ lib ? import ./lib.nix, pkgs ? import ./pkgs.nix { inherit lib; } }:
# discover = true: unknown paths are followed down to their values (to list what a schema needs).
{ modules, schema ? { }, specialArgs ? { }, discover ? false }:
let
  b = builtins;
  inherit (lib) concatMap mapAttrsToList;
  splitDots = s: b.filter b.isString (b.split "\\." s);

  # Modules: paths, functions and attribute sets, imports followed. A string path under the
  # stand-in modulesPath is a nixpkgs module this machine does not have: recorded, not read.
  modulesPath = "/stand-in/nixpkgs/nixos/modules";
  args = { inherit lib pkgs config modulesPath; options = { }; name = "stand-in"; nodes = { };
    utils = { }; } // specialArgs;
  # As the real module system: every module argument is passed (modules take `...`).
  callModule = f: f args;
  load = file: m:
    if b.isString m && lib.hasPrefix modulesPath m then [ { file = m; body = { }; external = true; } ]
    else if b.isPath m || b.isString m then load (toString m) (import m)
    else if b.isFunction m then load file (callModule m)
    else
      let
        structured = m ? config || m ? options;
        body = if structured then m else b.removeAttrs m [ "imports" "_file" "key" "disabledModules" "meta" ];
        here = m._file or file;
      in
      [ { file = here; inherit body structured; external = false; } ]
      ++ concatMap (load here) (m.imports or [ ]);
  loaded = concatMap (load "<modules>") modules;
  internal = b.filter (m: !m.external) loaded;
  defsOf = m: if m.structured then (m.body.config or { }) else m.body;
  optsOf = m: if m.structured then (m.body.options or { }) else { };

  # Declarations: option trees flattened, submodule options under `<name>` (attrsOf) or `*`.
  declsOf = prefix: tree:
    if (tree._type or null) == "option" then expand prefix tree
    else concatMap (n: declsOf (prefix ++ [ n ]) tree.${n}) (b.attrNames tree);
  expand = loc: opt:
    let
      t = opt.type or lib.types.unspecified;
      # Through attrsOf (any depth) to a submodule: its options, under `<name>` per level.
      inner = ty: loc':
        if ty.name == "submodule" then
          concatMap (n: declsOf (loc' ++ [ n ]) ty.options.${n}) (b.attrNames ty.options)
        else if (ty.name == "attrsOf" || ty.name == "lazyAttrsOf") then inner ty.nestedTypes.elemType (loc' ++ [ "<name>" ])
        else null;
      hasSub = ty: ty.name == "submodule"
        || ((ty.name == "attrsOf" || ty.name == "lazyAttrsOf") && hasSub ty.nestedTypes.elemType);
    in
    if hasSub t then inner t loc else [ { inherit loc; decl = opt; json = t.json; } ];
  decls = concatMap (m: declsOf [ ] (optsOf m)) internal;
  # Every module's `options`, merged into one tree (as `options` of the real evalModules).
  mergeTrees = x: y:
    if (x._type or null) == "option" || (y._type or null) == "option" then y
    else b.zipAttrsWith (_: vs: b.foldl' mergeTrees { } vs) [ x y ];
  optionTree = b.foldl' mergeTrees { } (map optsOf internal);

  # One trie of every option path: nodes are attribute sets, `__option` marks an option.
  insert = trie: loc: leaf:
    if loc == [ ] then trie // { __option = leaf; }
    else
      let k = b.head loc; in
      trie // { ${k} = insert (trie.${k} or { }) (b.tail loc) leaf; };
  schemaLeaves = mapAttrsToList (path: entry: {
    loc = splitDots path;
    leaf = {
      json = entry.type;
      decl = if entry ? default then { inherit (entry) default; } else null;
      apply = applies.${entry.apply or "none"};
    };
  }) schema;
  declLeaves = map (d: { inherit (d) loc; leaf = { inherit (d) json decl; apply = d.decl.apply or (v: v); }; }) decls;
  # The `apply` functions of nixpkgs options the modules read back (schema field "apply").
  applies = {
    none = v: v;
    # nixpkgs nixos/modules/misc/nixpkgs.nix: hostPlatform = lib.systems.elaborate value
    elaborateSystem = v: if b.isString v then { system = v; } else v;
    # nixpkgs nixos/modules/system/activation/specialisation.nix: `configuration` is typed
    # `(extendModules ...).type`, so reading it gives the extended system's configuration.
    extendModules = v: (import ./eval.nix { inherit lib pkgs; } {
      modules = modules ++ [ v ];
      inherit schema specialArgs;
    }).config;
  };
  trie = b.foldl' (t: l: insert t l.loc l.leaf) { } (schemaLeaves ++ declLeaves);
  child = node: n: if node == null then null else node.${n} or node."<name>" or null;

  # Properties pushed down at one level; a definition carries its conditions and priorities.
  push = d:
    let v = d.value; t = if b.isAttrs v then v._type or null else null; in
    if t == "if" then push (d // { value = v.content; conds = d.conds ++ [ v.condition ]; })
    else if t == "merge" then concatMap (c: push (d // { value = c; })) v.contents
    else if t == "override" then push (d // { value = v.content; prio = if d.prio == null then v.priority else d.prio; })
    else if t == "order" then push (d // { value = v.content; order = if d.order == null then v.priority else d.order; })
    else [ d ];
  # At an option, as lib/modules.nix dischargeProperties: a definition whose conditions are false
  # is dropped before its value is evaluated (the condition is what guards it).
  pushLeaf = d:
    if !(active d) then [ d ]
    else
      let v = d.value; t = if b.isAttrs v then v._type or null else null; in
      if t == "if" || t == "merge" || t == "override" || t == "order"
      then concatMap pushLeaf (pushOne d) else [ d ];
  pushOne = d:
    let v = d.value; t = v._type; in
    if t == "if" then [ (d // { value = v.content; conds = d.conds ++ [ v.condition ]; }) ]
    else if t == "merge" then map (c: d // { value = c; }) v.contents
    else if t == "override" then [ (d // { value = v.content; prio = if d.prio == null then v.priority else d.prio; }) ]
    else [ (d // { value = v.content; order = if d.order == null then v.priority else d.order; }) ];
  isSet = v: b.isAttrs v && !(lib.isDerivation v) && !(v ? _type);

  # A value with nested properties resolved (freeform settings, submodule values in lists).
  resolve = v:
    let t = if b.isAttrs v then v._type or null else null; in
    if t == "if" then (if v.condition then resolve v.content else null)
    else if t == "override" || t == "order" then resolve v.content
    else if t == "merge" then b.foldl' mergeValues null (map resolve v.contents)
    else if isSet v then b.mapAttrs (_: resolve) (lib.filterAttrs (_: x: !(isInactive x)) v)
    else if b.isList v then map resolve v
    else v;
  isInactive = x: b.isAttrs x && (x._type or null) == "if" && !x.condition;
  mergeValues = a: c:
    if a == null then c
    else if b.isList a && b.isList c then a ++ c
    else if isSet a && isSet c then
      b.zipAttrsWith (_: vs: b.foldl' mergeValues null vs) [ a c ]
    else c;

  active = d: b.all (c: c) d.conds;
  # An attrsOf element is one option value: as lib/types.nix attrsOf -> mergeDefinitions ->
  # filterOverrides, only the element's strongest definitions survive (their own inner
  # priorities then apply below). Reached through `<name>` in the trie.
  isElement = node: n: node != null && !(node ? ${n}) && node ? "<name>";
  prioOf = d: if d.prio == null then 100 else d.prio;
  strongest = ds:
    let best = b.foldl' (m: d: if prioOf d < m then prioOf d else m) 9999 ds; in
    b.filter (d: prioOf d == best) ds;
  subDefs = node: n: sets:
    let ds = concatMap (d: if d.value ? ${n} then [ (d // { value = d.value.${n}; }) ] else [ ]) sets; in
    if isElement node n then strongest (concatMap push ds) else ds;
  mergeOption = node: defs:
    let
      on = b.filter active defs;
      kept = strongest on;
      orderOf = d: if d.order == null then 1000 else d.order;
      sorted = b.sort (x: y: orderOf x < orderOf y) kept;
    in
    node.__option.apply (if kept == [ ] then fallback node
      # lib/types.nix deferredModule: the definitions, unevaluated, as one module's imports.
      else if (node.__option.json.t or null) == "deferredModule" then { imports = map (d: d.value) sorted; }
      else b.foldl' mergeValues null (map (d: resolve d.value) sorted));
  fallback = node:
    let leaf = node.__option; in
    if leaf.decl != null && leaf.decl ? default then leaf.decl.default
    else placeholder leaf.json;
  placeholder = json:
    let t = json.t or "unspecified"; in
    if t == "bool" then false
    else if t == "int" || t == "port" then (json.min or 0)
    else if t == "listOf" then [ ]
    else if t == "attrsOf" || t == "attrs" || t == "submodule" || t == "freeform" then { }
    else if t == "enum" then b.head json.values
    else if t == "package" then pkgs.standInPackage "placeholder"
    else if t == "nullOr" || t == "anything" || t == "unspecified" || t == "raw" then null
    else "";

  # The configuration: one level at a time, names from definitions and from the trie.
  level = node: defs:
    let
      pushed = concatMap push defs;
      sets = b.filter (d: isSet d.value) pushed;
      defNames = concatMap (d: b.attrNames d.value) sets;
      trieNames = if node == null then [ ] else
        b.filter (n: n != "<name>" && n != "__option") (b.attrNames node);
      names = lib.unique (defNames ++ trieNames);
      sub = n: subDefs node n sets;
    in
    if node != null && node ? __option then mergeOption node (concatMap pushLeaf defs)
    else b.listToAttrs (map (n: { name = n; value = level (child node n) (sub n); }) names);
  rootDefs = map (m: { file = m.file; value = defsOf m; conds = [ ]; prio = null; order = null; }) internal;
  config = level trie rootDefs;

  # The report: every defined path that is an option or unknown, with its definitions.
  serialise = v:
    let t = if b.isAttrs v then v._type or null else null; in
    if b.isFunction v then { __function = true; }
    else if lib.isDerivation v then { __package = v.name or "?"; }
    else if b.isPath v then { __path = toString v; }
    else if t == "if" then (if v.condition then serialise v.content else { __inactive = true; })
    else if t == "override" || t == "order" then serialise v.content
    else if t == "merge" then map serialise v.contents
    else if b.isAttrs v then b.mapAttrs (_: serialise) v
    else if b.isList v then map serialise v
    else v;
  walk = loc: node: defs:
    let
      # Following an unknown path (discover) looks only into active definitions: an inactive
      # one may not even evaluate (its condition is what guards it).
      pushed = let all = concatMap push defs; in if node == null then b.filter active all else all;
      sets = b.filter (d: isSet d.value) pushed;
      leaves = b.filter (d: !(isSet d.value)) pushed;
      names = lib.unique (concatMap (d: b.attrNames d.value) sets);
      sub = n: subDefs node n sets;
      entry = known: ds: {
        inherit loc known;
        defs = map (d: let on = active d; in
          { inherit (d) file; active = on; value = if known && on then serialise d.value else null; }) ds;
      };
    in
    if node == null && !discover then [ (entry false defs) ]
    else if node != null && node ? __option then [ (entry true (concatMap pushLeaf defs)) ]
    else if node == null && names == [ ] then (if pushed == [ ] then [ ] else [ (entry false pushed) ])
    # A known prefix (not an option itself) set to a non-set value is refused; `{ }` defines nothing.
    else (if leaves != [ ] then [ (entry false leaves) ] else [ ])
      ++ concatMap (n: walk (loc ++ [ n ]) (child node n) (sub n)) names;
in
{
  inherit config optionTree;
  options = b.listToAttrs (map (d: { name = b.concatStringsSep "." d.loc; value = d.json; }) decls);
  report = walk [ ] trie rootDefs;
  externalModules = map (m: m.file) (b.filter (m: m.external) loaded);
}
