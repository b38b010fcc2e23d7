# One module's `config` with its properties discharged as the module system does at each option
# (lib/modules.nix pushDownProperties, dischargeProperties, filterOverrides, sortProperties), for
# tests that read a single module's output without the option tree: a false mkIf defines nothing,
# mkMerge merges, only the strongest mkOverride among a key's definitions counts, lists are
# concatenated in mkOrder order. Option types do not take part (eval.nix is the whole system).
let
  b = builtins;
  isSet = v: b.isAttrs v && (v.type or null) != "derivation" && !(v ? _type);
  # value -> [ { value; prio; order; } ] with properties pushed to this level (conditions decided).
  defs = prio: order: v:
    let t = if b.isAttrs v then v._type or null else null; in
    if t == "if" then (if v.condition then defs prio order v.content else [ ])
    else if t == "merge" then b.concatLists (map (defs prio order) v.contents)
    else if t == "override" then defs (if prio == null then v.priority else prio) order v.content
    else if t == "order" then defs prio (if order == null then v.priority else order) v.content
    else [ { value = v; inherit prio order; } ];
  prioOf = d: if d.prio == null then 100 else d.prio;
  orderOf = d: if d.order == null then 1000 else d.order;
  merge = ds:
    let
      best = b.foldl' (m: d: if prioOf d < m then prioOf d else m) 9999 ds;
      kept = b.sort (x: y: orderOf x < orderOf y) (b.filter (d: prioOf d == best) ds);
      values = map (d: d.value) kept;
      sets = b.filter isSet values;
    in
    if kept == [ ] then null
    else if b.all b.isList values then b.concatLists (map (map resolve) values)
    else if sets != [ ] && b.length sets == b.length values then
      b.listToAttrs (b.concatMap (n:
        let sub = b.concatMap (d: if d.value ? ${n} then defs d.prio d.order d.value.${n} else [ ]) kept; in
        if sub == [ ] then [ ] else [ { name = n; value = merge sub; } ])
        (b.foldl' (acc: s: acc ++ b.filter (n: !(b.elem n acc)) (b.attrNames s)) [ ] sets))
    else b.elemAt values (b.length values - 1);
  resolve = v: merge (defs null null v);
in
v: let r = resolve v; in if r == null then { } else r
