// world: fanout-policy
// Fan-out plugin: the Secret goes to every candidate
// namespace that carries a given label (optionally with a given value), except
// `kube-*` namespaces. Same behaviour as the Rust `fanout-label`.
//
// Settings (JSON): {"label": "ecr-pull", "value": "enabled"}; `label` is
// required and not empty, `value` is optional (without it, any value matches).

function parse(settings) {
  let s;
  try {
    s = JSON.parse(settings);
  } catch (e) {
    throw `invalid settings: ${e.message}`;
  }
  if (s === null || typeof s !== "object" || Array.isArray(s)) {
    throw "invalid settings: expected an object";
  }
  for (const key of Object.keys(s)) {
    if (key !== "label" && key !== "value") {
      throw `invalid settings: unknown field \`${key}\`, expected \`label\` or \`value\``;
    }
  }
  if (typeof s.label !== "string") {
    throw "invalid settings: `label` must be a string";
  }
  if (s.label === "") {
    throw "invalid settings: label must not be empty";
  }
  if (s.value !== undefined && s.value !== null && typeof s.value !== "string") {
    throw "invalid settings: `value` must be a string";
  }
  return { label: s.label, value: s.value ?? null };
}

export const settings = {
  validateSettings(settings) {
    parse(settings);
  },
};

export const fanout = {
  // candidates: [{name, labels: [[key, value], ...], annotations}, ...]
  selectNamespaces(settings, _cr, candidates) {
    const { label, value } = parse(settings);
    return candidates
      .filter((ns) => !ns.name.startsWith("kube-"))
      .filter((ns) => ns.labels.some(([k, v]) => k === label && (value === null || v === value)))
      .map((ns) => ns.name);
  },
};
