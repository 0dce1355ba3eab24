"""Validates objects against a CustomResourceDefinition's openAPIV3Schema
(tests/fixtures/crd/*.json) as the API server does for a structural
schema with strict field validation (kubectl's default):

- OpenAPI v3 -> JSON Schema: `nullable`, `x-kubernetes-int-or-string`,
  `x-kubernetes-preserve-unknown-fields`;
- an object schema with `properties` and no `additionalProperties`
  rejects unknown fields (the server prunes them; Strict reports them);
- `x-kubernetes-list-type: map` lists have unique `x-kubernetes-list-map-keys`,
  `set` lists unique items.

Uses Debian's python3-jsonschema.  validate(obj, crd) -> list of errors.
"""
import json
import os

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures", "crd")


def load(name):
    """name: "podmonitor" or "prometheusrule" (tests/fixtures/crd/<name>.v1.json)."""
    with open(os.path.join(FIXTURES, name + ".v1.json")) as f:
        return json.load(f)


def to_jsonschema(s):
    if isinstance(s, list):
        return [to_jsonschema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k in ("properties", "patternProperties"):
            out[k] = {name: to_jsonschema(sub) for name, sub in v.items()}
        elif k.startswith("x-kubernetes-") or k in ("nullable", "format", "default"):
            continue
        else:
            out[k] = to_jsonschema(v)
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if "properties" in s and "additionalProperties" not in s \
            and not s.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _lists(schema, obj, path, errs):
    """The x-kubernetes-list-type rules JSON Schema cannot say."""
    if isinstance(obj, dict) and isinstance(schema, dict):
        props = schema.get("properties", {})
        for k, v in obj.items():
            if k in props:
                _lists(props[k], v, path + [k], errs)
    elif isinstance(obj, list) and isinstance(schema, dict):
        lt = schema.get("x-kubernetes-list-type")
        if lt == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen = set()
            for item in obj:
                key = tuple(json.dumps(item.get(k)) for k in keys)
                if key in seen:
                    errs.append("%s: duplicate %s %s" % ("/".join(path), keys, key))
                seen.add(key)
        elif lt == "set":
            dumped = [json.dumps(x, sort_keys=True) for x in obj]
            if len(set(dumped)) != len(dumped):
                errs.append("%s: duplicate items in a set list" % "/".join(path))
        for i, item in enumerate(obj):
            _lists(schema.get("items", {}), item, path + [str(i)], errs)


def validate(obj, crd):
    """Errors (strings) of obj against crd (a load() result); [] when valid."""
    errs = []
    api = "%s/%s" % (crd["group"], crd["version"])
    if obj.get("apiVersion") != api or obj.get("kind") != crd["kind"]:
        errs.append("apiVersion/kind %s/%s, want %s/%s" % (
            obj.get("apiVersion"), obj.get("kind"), api, crd["kind"]))
    meta = obj.get("metadata", {})
    if not meta.get("name"):
        errs.append("metadata.name is missing")
    schema = crd["openAPIV3Schema"]
    v = jsonschema.Draft7Validator(to_jsonschema(schema))
    for e in sorted(v.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        errs.append("%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)", e.message))
    _lists(schema, obj, [], errs)
    return errs
