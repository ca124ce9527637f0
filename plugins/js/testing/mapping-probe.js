// world: policy
// Test plugin (tests/js_plugins.rs): reports how componentize-qjs maps the WIT
// types to JavaScript, so that plugins/README.md's "JS mapping" stays true.
// Its answers are JSON documents describing what it received; they are read
// through PluginSession directly (the guardrails would reject them).
//
// Settings: {"mode": "..."} picks what `decide` does:
//   "describe" (default)  give up with a description of the failure and expiry;
//   "bigint"              answer retry-after-ms with a BigInt;
//   "number"              answer retry-after-ms with 2^53 (a JS number);
//   "throw-string"        throw a string;
//   "throw-error"         throw an Error object;
//   "return-string"       return a bare string instead of a variant.

function kind(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

export const settings = {
  validateSettings(settings) {
    const s = JSON.parse(settings);
    if (s.reject) throw `rejected: ${s.reject}`;
  },
};

export const naming = {
  secretName(_settings, cr, targetNamespace) {
    return JSON.stringify({
      keys: Object.keys(cr),
      accountId: cr.accountId,
      labels: cr.labels,
      labelsKind: kind(cr.labels),
      firstLabelKind: kind(cr.labels[0]),
      targetNamespace,
    });
  },
};

export const fanout = {
  selectNamespaces(_settings, _cr, candidates) {
    return [JSON.stringify({ kind: kind(candidates), first: candidates[0] })];
  },
};

export const retry = {
  decide(settings, _cr, failure, tokenExpiresInSeconds) {
    const mode = JSON.parse(settings).mode || "describe";
    switch (mode) {
      case "bigint":
        return { tag: "retry-after-ms", val: 5000n };
      case "number":
        return { tag: "retry-after-ms", val: 2 ** 53 };
      case "throw-string":
        throw "no decision";
      case "throw-error":
        throw new Error("boom");
      case "return-string":
        return "retry-after-ms";
      default:
        return {
          tag: "give-up",
          val: JSON.stringify({
            failure,
            attemptKind: kind(failure.attempt),
            expires: tokenExpiresInSeconds,
            expiresKind: kind(tokenExpiresInSeconds),
          }),
        };
    }
  },
};
