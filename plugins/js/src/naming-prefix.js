// world: naming-policy
// Naming plugin: the Secret is called
// `<prefix>-<account>-<region>`. Same behaviour as the Rust `naming-prefix`.
//
// Settings (JSON): {"prefix": "ecr"}; `prefix` defaults to `ecr` and must be
// lowercase alphanumerics and `-`, starting with a letter, at most 200
// characters. Unknown keys are refused.
//
// JS mapping (componentize-qjs): each exported WIT interface is an exported
// object named after it; `result<T, string>` is "return T, or throw a string".

const PREFIX = /^[a-z][a-z0-9-]{0,199}$/;

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
    if (key !== "prefix") {
      throw `invalid settings: unknown field \`${key}\`, expected \`prefix\``;
    }
  }
  const prefix = s.prefix === undefined ? "ecr" : s.prefix;
  if (typeof prefix !== "string" || !PREFIX.test(prefix)) {
    throw `invalid settings: prefix ${JSON.stringify(prefix)} must be lowercase alphanumerics and '-', start with a letter, at most 200 characters`;
  }
  return { prefix };
}

export const settings = {
  validateSettings(settings) {
    parse(settings);
  },
};

export const naming = {
  // cr: {name, namespace, labels, annotations, registry, accountId, region, parameters};
  // record fields arrive in camelCase, maps as arrays of [key, value].
  secretName(settings, cr, _targetNamespace) {
    const { prefix } = parse(settings);
    if (!cr.accountId || !cr.region) {
      throw `registry ${JSON.stringify(cr.registry)} has no account id or region`;
    }
    return `${prefix}-${cr.accountId}-${cr.region}`;
  },
};
