// `confidence-openfeature-provider/testing`: test your own code against real Confidence
// resolution with no account and no network. Describe flags as plain data, get an offline
// provider resolving them with the same resolver as production, and read back the exposures and
// logs it would have sent.
import { binding } from './native';
import type { ProviderOptions } from './options';
import { ConfidenceServerProviderLocal, nativeHandle } from './provider';

type Scalar = string | number | boolean;
type Json = Scalar | null | Json[] | { [key: string]: Json };

/** A targeting condition on context attributes (dot paths such as `app.version`). */
export type TestCondition =
  | { attribute: string; equals: Scalar }
  | { attribute: string; in: Scalar[] }
  | { attribute: string; gt?: number; gte?: number; lt?: number; lte?: number }
  | { attribute: string; versionGt?: string; versionGte?: string; versionLt?: string; versionLte?: string }
  /** RFC 3339 timestamps, exclusive bounds. */
  | { attribute: string; after?: string; before?: string }
  | { all: TestCondition[] }
  | { any: TestCondition[] }
  | { not: TestCondition };

/** One targeting rule; the first rule that matches a context decides. */
export interface TestRule {
  /** Default `rule-<index>`. */
  name?: string;
  /** Everyone the rule matches gets this variant… */
  variant?: string;
  /** …or a split by relative weight, bucketed by the targeting key (`{ control: 50, treatment: 50 }`). */
  split?: Record<string, number>;
  /** Who the rule matches (default: everyone). */
  when?: TestCondition;
  /** Share of units in (0, 1] the rule admits, bucketed by the targeting key (default 1). */
  rollout?: number;
  /** Context path of the unit (default `targeting_key`, i.e. OpenFeature's `targetingKey`). */
  targetingKey?: string;
  /** Name of a materialization that keeps assignments sticky (needs a `materializationStore`). */
  sticky?: string;
}

export type TestFieldType = 'boolean' | 'string' | 'integer' | 'number' | 'object' | 'list';

export interface TestFlag {
  /** Variant id → the variant's value (always an object in Confidence). */
  variants: Record<string, { [key: string]: Json }>;
  /** Field types; inferred from the variants when left out. */
  schema?: Record<string, TestFieldType | Record<string, unknown>>;
  rules?: TestRule[];
  archived?: boolean;
  description?: string;
}

export interface TestStateDescription {
  /** Default `test-client-secret`. */
  clientSecret?: string;
  /** Default `test-account` (it salts the buckets, like a real account id). */
  accountId?: string;
  /** Flag name (lowercase letters, digits, `-`) → flag. */
  flags: Record<string, TestFlag>;
}

/** A resolver state for `initialState`; throws a TypeError naming the bad part of `description`. */
export function buildTestState(description: TestStateDescription): Buffer {
  try {
    return binding().buildTestState(JSON.stringify(description));
  } catch (e) {
    throw new TypeError(e instanceof Error ? e.message : String(e), { cause: e });
  }
}

/** The state `npm run demo` resolves (flags `new-ui`, `welcome-message`, `max-items`, `checkout`, …). */
export function demoState(): Buffer {
  return binding().demoState();
}

export type TestProviderOptions = Omit<ProviderOptions, 'flagClientSecret' | 'initialState' | 'offline'>;

/** An offline provider resolving `description` (no network: logs are kept for `takeFlagLogs`). */
export function createTestProvider(
  description: TestStateDescription,
  options: TestProviderOptions = {},
): ConfidenceServerProviderLocal {
  return new ConfidenceServerProviderLocal({
    ...options,
    flagClientSecret: description.clientSecret ?? 'test-client-secret',
    initialState: buildTestState(description),
    offline: true,
  });
}

/** One exposure: a flag value the application actually used. */
export interface Exposure {
  /** The flag's name, as in the flag key (`new-ui`). */
  flag: string;
  /** The full variant name, as in evaluation details (`flags/new-ui/variants/on`); absent without a variant. */
  variant?: string;
  /** Confidence's reason when no variant was assigned (`NO_SEGMENT_MATCH`, …). */
  reason?: string;
  targetingKey: string;
  resolveId: string;
  rule?: string;
}

/** A decoded log batch, as it would have been uploaded (see `decode_flag_logs` in src/testkit.rs). */
export interface FlagLogs {
  flagAssigned: {
    resolveId: string;
    client?: string;
    clientCredential?: string;
    flags: {
      flag: string;
      variant?: string;
      segment?: string;
      reason?: string;
      targetingKey: string;
      targetingKeySelector?: string;
      assignmentId?: string;
      rule?: string;
      applyTime?: string;
    }[];
  }[];
  flagResolveInfo: { flag: string; variants: { variant?: string; count: number }[]; rules: unknown[] }[];
  clientResolveInfo: { client: string; clientCredential: string; schemas: unknown[] }[];
  telemetry?: Record<string, unknown>;
}

function nativeOf(provider: ConfidenceServerProviderLocal) {
  const native = provider?.[nativeHandle];
  if (!native) throw new TypeError('expected a ConfidenceServerProviderLocal');
  return native;
}

/**
 * Everything `provider` has logged and not yet sent, decoded and removed (so each call returns
 * what happened since the previous one). For offline providers this is everything they would have
 * uploaded; for online ones it takes the logs before the next upload does.
 */
export async function takeFlagLogs(provider: ConfidenceServerProviderLocal): Promise<FlagLogs[]> {
  const batches = await nativeOf(provider).takeLogs();
  return batches.map((b) => JSON.parse(binding().decodeFlagLogs(b)) as FlagLogs);
}

/** The exposures among `takeFlagLogs`, flattened in the order they were logged. */
export async function takeExposures(provider: ConfidenceServerProviderLocal): Promise<Exposure[]> {
  const exposures: Exposure[] = [];
  for (const logs of await takeFlagLogs(provider)) {
    for (const assigned of logs.flagAssigned) {
      for (const f of assigned.flags) {
        const exposure: Exposure = {
          flag: f.flag.replace(/^flags\//, ''),
          targetingKey: f.targetingKey,
          resolveId: assigned.resolveId,
        };
        if (f.variant) exposure.variant = f.variant;
        if (f.reason) exposure.reason = f.reason;
        if (f.rule) exposure.rule = f.rule;
        exposures.push(exposure);
      }
    }
  }
  return exposures;
}
