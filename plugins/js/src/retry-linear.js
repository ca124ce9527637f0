// world: retry-policy
// Retry plugin: linear backoff (`step_ms * attempt`, capped at `max_ms`); gives
// up on `access-denied` after `give_up_after` attempts. Same behaviour as the
// Rust `retry-linear`.
//
// Settings (JSON), all optional: {"step_ms": 5000, "max_ms": 60000, "give_up_after": 3}.
// Unknown keys are refused.

const DEFAULTS = { step_ms: 5000, max_ms: 60000, give_up_after: 3 };
const U32_MAX = 0xffffffff;

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
  const out = { ...DEFAULTS };
  for (const [key, value] of Object.entries(s)) {
    if (!(key in DEFAULTS)) {
      throw `invalid settings: unknown field \`${key}\`, expected one of \`step_ms\`, \`max_ms\`, \`give_up_after\``;
    }
    // Delays are u64 milliseconds on the WIT side; a JS number is exact up to 2^53.
    if (!Number.isSafeInteger(value) || value < 0 || (key === "give_up_after" && value > U32_MAX)) {
      throw `invalid settings: \`${key}\` must be a non-negative integer, got ${JSON.stringify(value)}`;
    }
    out[key] = value;
  }
  if (out.step_ms === 0 || out.max_ms < out.step_ms) {
    throw `invalid settings: need 0 < step_ms (${out.step_ms}) <= max_ms (${out.max_ms})`;
  }
  if (out.give_up_after === 0) {
    throw "invalid settings: give_up_after must be at least 1";
  }
  return out;
}

export const settings = {
  validateSettings(settings) {
    parse(settings);
  },
};

export const retry = {
  // failure: {kind, message, attempt}; `kind` is the enum case name as a string
  // ("access-denied"); tokenExpiresInSeconds: option<u64> is a number or null.
  // The answer is the variant retry-decision as {tag, val}.
  decide(settings, _cr, failure, _tokenExpiresInSeconds) {
    const s = parse(settings);
    if (failure.kind === "access-denied" && failure.attempt >= s.give_up_after) {
      return {
        tag: "give-up",
        val: `access denied ${failure.attempt} times in a row: ${failure.message}`,
      };
    }
    const delay = Math.min(s.step_ms * Math.max(failure.attempt, 1), s.max_ms);
    return { tag: "retry-after-ms", val: delay };
  },
};
