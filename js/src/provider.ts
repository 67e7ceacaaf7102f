// `ConfidenceServerProviderLocal`: the OpenFeature server provider over the native resolver.
// Evaluations are answered synchronously by the addon (no network on the evaluation path);
// only a materialization store makes them wait, for the store's reads.
import { inspect } from 'node:util';

import {
  ErrorCode,
  type EvaluationContext,
  type EvaluationDetails,
  type FlagValue,
  type JsonValue,
  type Logger,
  OpenFeatureEventEmitter,
  type Provider,
  type ResolutionDetails,
} from '@openfeature/server-sdk';

import { convertContext, InvalidContextError } from './context';
import {
  type ConfidenceReason,
  confidenceReason,
  echo,
  type FlagKey,
  type FlagType,
  failure,
  parseFlagKey,
  TELEMETRY_REASON,
  toDetails,
} from './evaluate';
import {
  ConfidenceRemoteStore,
  type MaterializationStore,
  type ReadResult,
  toReadOps,
  toRecords,
  toWriteOps,
} from './materialization';
import {
  type NativeResolvedFlag,
  type NativeResolveResult,
  type NativeResolver,
  type NativeResolveStep,
  nativeError,
  nativeResolverFactory,
} from './native';
import { nativeOptions, type ProviderOptions, type ResolvedOptions, resolveOptions } from './options';
import { StateWatcher } from './state_watch';

/** A flag as answered by a bulk `resolve`, in Confidence's own terms. */
export interface BundledFlag {
  reason: ConfidenceReason;
  /** `flags/<flag>/variants/<variant>`, empty when no variant was assigned. */
  variant: string;
  /** The variant's value, `null` when no variant was assigned. */
  value: { [key: string]: JsonValue } | null;
  shouldApply: boolean;
  assignmentOrigin: string;
}

/** Many flags resolved against one state, with the token `applyFlag` needs. */
export interface FlagBundle {
  /** Keyed by flag name (without `flags/`). */
  flags: Record<string, BundledFlag>;
  resolveId: string;
  /** Base64; pass to `applyFlag` when a flag is actually used. */
  resolveToken: string;
  errorCode?: ErrorCode;
  errorMessage?: string;
}

export interface BulkResolveOptions {
  /** Log exposure for every flag at once (default false: call `applyFlag` per flag used). */
  apply?: boolean | undefined;
}

/** Symbol under which the test kit reaches the native resolver (not public API). */
export const nativeHandle = Symbol('confidence.native');

const CLOSE_TIMEOUT_MS = 3000;
/** Evaluations whose telemetry is handed to the resolver in one call. */
const TELEMETRY_BATCH = 256;

type Outcome<T> = { details: ResolutionDetails<T>; telemetry: number };
type Prepared = { key: FlagKey; json: string; apply: boolean };

export class ConfidenceServerProviderLocal implements Provider {
  readonly metadata = { name: 'ConfidenceServerProviderLocal' } as const;
  readonly runsOn = 'server' as const;
  readonly hooks = [];
  readonly events = new OpenFeatureEventEmitter();

  // ES-private: the options hold the client secret, the encryption key and perhaps a proxy
  // password, which `util.inspect`, `Object.entries` and `JSON.stringify` must never show.
  readonly #options: ResolvedOptions;
  private readonly native: NativeResolver;
  readonly #watcher: StateWatcher;
  private readonly logger: Logger;
  private warnedNoWrite = false;
  /** The store in use (the option's, or Confidence's remote one). */
  private readonly store: MaterializationStore | undefined;
  /** Telemetry of recent evaluations as `(reason, latencyUs)` pairs, sent in batches. */
  private readonly pendingTelemetry = new Uint32Array(TELEMETRY_BATCH * 2);
  private pendingPairs = 0;

  constructor(options: ProviderOptions) {
    this.#options = resolveOptions(options);
    this.logger = this.#options.logger;
    const o = this.#options;
    // Outside the try: an addon that fails to load is not an option error.
    const createNative = nativeResolverFactory();
    try {
      this.native = createNative(nativeOptions(o));
    } catch (e) {
      // The native message starts with the option it is about.
      throw new TypeError(nativeError(e).message, { cause: e });
    }
    this.store =
      o.materializationStore === 'CONFIDENCE_REMOTE_STORE'
        ? new ConfidenceRemoteStore(this.native)
        : o.materializationStore;
    this.#watcher = new StateWatcher(this.native, this.events, this.#options, () => this.flushTelemetry());
  }

  /** What `JSON.stringify` shows: the provider's name and engine, never its options. */
  toJSON(): { name: string; engine: string } {
    return { name: this.metadata.name, engine: this.#options.engine };
  }

  /** What `util.inspect` and `console.log` show (the same). */
  [inspect.custom](): string {
    return `ConfidenceServerProviderLocal ${JSON.stringify(this.toJSON())}`;
  }

  /** The native resolver, for the test kit (with the buffered telemetry handed over first). */
  get [nativeHandle](): NativeResolver {
    this.flushTelemetry();
    return this.native;
  }

  /**
   * Resolves once a state is loaded (at once with `initialState`); rejects with a readable
   * reason after `initializeTimeout` or on a failure retrying cannot fix (401/403, wrong key,
   * unusable state). Either way the provider keeps trying in the background and emits
   * PROVIDER_READY when a state arrives.
   */
  async initialize(): Promise<void> {
    if (!this.#options.encryptionKey && !this.#options.offline) {
      this.logger.warn(
        'no encryptionKey: fetching the unencrypted state; set encryptionKey to fetch the encrypted copy',
      );
    }
    this.#watcher.start();
    try {
      await this.native.initialize(this.#options.initializeTimeout);
    } catch (e) {
      this.#watcher.failed();
      throw new Error(`Confidence provider could not load flag state: ${nativeError(e).message}`, { cause: e });
    }
    this.#watcher.ready();
  }

  /** Stops background work and uploads the remaining logs (bounded by 3 s). */
  async onClose(): Promise<void> {
    this.#watcher.stop();
    this.flushTelemetry();
    try {
      await this.native.close(CLOSE_TIMEOUT_MS);
    } catch (e) {
      this.logger.warn(`final log flush failed: ${nativeError(e).message}`);
    }
  }

  resolveBooleanEvaluation(
    flagKey: string,
    defaultValue: boolean,
    context: EvaluationContext,
  ): Promise<ResolutionDetails<boolean>> {
    return this.evaluate(flagKey, defaultValue, context, 'boolean');
  }

  resolveStringEvaluation(
    flagKey: string,
    defaultValue: string,
    context: EvaluationContext,
  ): Promise<ResolutionDetails<string>> {
    return this.evaluate(flagKey, defaultValue, context, 'string');
  }

  resolveNumberEvaluation(
    flagKey: string,
    defaultValue: number,
    context: EvaluationContext,
  ): Promise<ResolutionDetails<number>> {
    return this.evaluate(flagKey, defaultValue, context, 'number');
  }

  resolveObjectEvaluation<T extends JsonValue>(
    flagKey: string,
    defaultValue: T,
    context: EvaluationContext,
  ): Promise<ResolutionDetails<T>> {
    return this.evaluate(flagKey, defaultValue, context, 'object');
  }

  /**
   * Resolves many flags (all of the client's when `flagNames` is empty) against one state.
   * Never rejects: failures come back as a bundle with `errorCode` and no flags.
   */
  async resolve(
    context: EvaluationContext,
    flagNames: string[] = [],
    options: BulkResolveOptions | boolean = {},
  ): Promise<FlagBundle> {
    const started = performance.now();
    // Confidence's official provider takes `apply` as a boolean: a migrating call must not
    // silently log no exposure.
    const apply = typeof options === 'boolean' ? options : options?.apply === true;
    try {
      if (!Array.isArray(flagNames) || flagNames.some((n) => typeof n !== 'string' || !n || n.includes('.'))) {
        throw Object.assign(new Error('flagNames must be an array of flag names (no dots)'), {
          code: ErrorCode.PARSE_ERROR,
        });
      }
      const { json } = convertContext(context);
      const result = await this.run(
        flagNames.map((n) => `flags/${n}`),
        json,
        apply,
      );
      const flags: Record<string, BundledFlag> = {};
      for (const f of result.flags) {
        flags[f.flag.replace(/^flags\//, '')] = {
          reason: confidenceReason(f.reason),
          variant: f.variant,
          value: f.valueJson === undefined ? null : JSON.parse(f.valueJson),
          shouldApply: f.shouldApply,
          assignmentOrigin: f.assignmentOrigin,
        };
      }
      this.telemetry(TELEMETRY_REASON.BUNDLE, started);
      return { flags, resolveId: result.resolveId, resolveToken: result.resolveToken.toString('base64') };
    } catch (e) {
      this.telemetry(TELEMETRY_REASON.ERROR, started);
      const { errorCode, message } = classify(e);
      return { flags: {}, resolveId: '', resolveToken: '', errorCode, errorMessage: message };
    }
  }

  /** Logs the exposure of `flagName` from a bulk `resolve` made with `apply: false`. */
  applyFlag(resolveToken: string, flagName: string): void {
    if (typeof resolveToken !== 'string' || !resolveToken)
      throw new TypeError("resolveToken must be the bundle's non-empty token");
    if (typeof flagName !== 'string' || !flagName || flagName.includes('.'))
      throw new TypeError('flagName must be a flag name (no dots)');
    try {
      this.native.applyFlag(Buffer.from(resolveToken, 'base64'), `flags/${flagName}`);
    } catch (e) {
      throw new Error(`applyFlag(${echo(flagName)}): ${nativeError(e).message}`, { cause: e });
    }
  }

  /** Uploads everything logged so far (the provider also does this every `flushInterval`). */
  async flush(): Promise<void> {
    this.flushTelemetry();
    await this.native.flush();
  }

  /** Prometheus text: state sync, uploads, drops, guest memory, and the resolver's own series. */
  metrics(): string {
    return this.native.metrics();
  }

  /** `metrics()` under the name of Confidence's official provider. */
  getPrometheusMetrics(): string {
    return this.metrics();
  }

  /**
   * Direct synchronous evaluation for hot paths: the same details as the OpenFeature client's
   * `getBooleanDetails` (value, variant, reason, error code, metadata; exposure logged the same
   * way) without the SDK's hooks, context merging and promise machinery. Flags that need a
   * materialization store answer `GENERAL` here; evaluate those through the OpenFeature client.
   */
  evaluateBoolean(flagKey: string, defaultValue: boolean, context: EvaluationContext = {}): EvaluationDetails<boolean> {
    return this.direct(flagKey, defaultValue, context, 'boolean');
  }

  evaluateString(flagKey: string, defaultValue: string, context: EvaluationContext = {}): EvaluationDetails<string> {
    return this.direct(flagKey, defaultValue, context, 'string');
  }

  evaluateNumber(flagKey: string, defaultValue: number, context: EvaluationContext = {}): EvaluationDetails<number> {
    return this.direct(flagKey, defaultValue, context, 'number');
  }

  evaluateObject<T extends JsonValue>(
    flagKey: string,
    defaultValue: T,
    context: EvaluationContext = {},
  ): EvaluationDetails<T> {
    return this.direct(flagKey, defaultValue, context, 'object');
  }

  private direct<T extends FlagValue>(
    flagKey: string,
    defaultValue: T,
    context: EvaluationContext,
    type: FlagType,
  ): EvaluationDetails<T> {
    const details = this.evaluateNow(flagKey, defaultValue, context, type);
    return { flagKey, ...details, flagMetadata: details.flagMetadata ?? {} };
  }

  /** The OpenFeature path: answered synchronously unless a materialization store must be read. */
  private evaluate<T>(
    flagKey: string,
    defaultValue: T,
    context: EvaluationContext,
    type: FlagType,
  ): Promise<ResolutionDetails<T>> {
    if (this.store) return this.evaluateWithStore(flagKey, defaultValue, context, type);
    return Promise.resolve(this.evaluateNow(flagKey, defaultValue, context, type));
  }

  private evaluateNow<T>(
    flagKey: string,
    defaultValue: T,
    context: EvaluationContext,
    type: FlagType,
  ): ResolutionDetails<T> {
    const started = performance.now();
    const request = this.prepare(flagKey, defaultValue, context);
    let outcome: Outcome<T>;
    if ('details' in request) {
      outcome = request;
    } else {
      try {
        const flag = this.native.evaluate(`flags/${request.key.name}`, request.json, request.apply);
        outcome = toDetails(request.key, flag ?? undefined, defaultValue, type, this.#watcher.metadata());
      } catch (e) {
        outcome = failed(e, defaultValue);
      }
    }
    this.telemetry(outcome.telemetry, started);
    return outcome.details;
  }

  private async evaluateWithStore<T>(
    flagKey: string,
    defaultValue: T,
    context: EvaluationContext,
    type: FlagType,
  ): Promise<ResolutionDetails<T>> {
    const started = performance.now();
    const request = this.prepare(flagKey, defaultValue, context);
    let outcome: Outcome<T>;
    if ('details' in request) {
      outcome = request;
    } else {
      try {
        const result = await this.run([`flags/${request.key.name}`], request.json, request.apply);
        outcome = this.settle(request.key, result, defaultValue, type);
      } catch (e) {
        outcome = failed(e, defaultValue);
      }
    }
    this.telemetry(outcome.telemetry, started);
    return outcome.details;
  }

  /** Flag key and context checked and converted, or the failure they already are. */
  private prepare<T>(flagKey: string, defaultValue: T, context: EvaluationContext): Prepared | Outcome<T> {
    const key = parseFlagKey(flagKey);
    if (!key) {
      const message = `invalid flag key ${echo(JSON.stringify(flagKey))}: expected "<flag>" or "<flag>.<path>"`;
      return { details: failure(defaultValue, ErrorCode.PARSE_ERROR, message), telemetry: TELEMETRY_REASON.ERROR };
    }
    try {
      const { json, apply } = convertContext(context);
      return { key, json, apply: apply && !this.#options.disableExposureCollection };
    } catch (e) {
      return failed(e, defaultValue);
    }
  }

  private settle<T>(key: FlagKey, result: NativeResolveResult, defaultValue: T, type: FlagType): Outcome<T> {
    return toDetails(key, find(result.flags, key), defaultValue, type, this.#watcher.metadata());
  }

  /** One resolve: synchronous without a store; with one, its reads, then the resumed answer. */
  private async run(flags: string[], json: string, apply: boolean): Promise<NativeResolveResult> {
    const store = this.store;
    if (!store) return this.native.resolve(flags, json, apply);
    let step: NativeResolveStep = this.native.resolveWithStore(flags, json, apply);
    if (step.suspended) {
      let results: ReadResult[];
      try {
        results = await store.readMaterializations(toReadOps(step.suspended.reads));
      } catch (e) {
        throw new Error(`materialization store read failed: ${e instanceof Error ? e.message : String(e)}`, {
          cause: e,
        });
      }
      step = this.native.resume(step.suspended.state, toRecords(results));
      if (step.suspended) throw new Error('the resolver is still suspended after the store answered its reads');
    }
    const resolved = step.resolved as NativeResolveResult;
    if (resolved.materializationsToWrite.length > 0) this.write(resolved.materializationsToWrite);
    return resolved;
  }

  /** Fire-and-forget: a failed write is logged, the evaluation is unaffected (docs/resolver.md, "Provider behaviour"). */
  private write(records: NativeResolveResult['materializationsToWrite']): void {
    const store = this.store;
    if (!store?.writeMaterializations) {
      if (!this.warnedNoWrite) {
        this.warnedNoWrite = true;
        this.logger.warn('the materialization store has no writeMaterializations: sticky assignments are not stored');
      }
      return;
    }
    store.writeMaterializations(toWriteOps(records)).catch((e: unknown) => {
      this.logger.warn(`materialization store write failed: ${e instanceof Error ? e.message : String(e)}`);
    });
  }

  private telemetry(reason: number, started: number): void {
    const micros = Math.min(0xffffffff, Math.round((performance.now() - started) * 1000));
    const t = this.pendingTelemetry;
    t[this.pendingPairs * 2] = reason;
    t[this.pendingPairs * 2 + 1] = micros;
    if (++this.pendingPairs === TELEMETRY_BATCH) this.flushTelemetry();
  }

  /** Hands buffered telemetry to the resolver (also on every state-watch tick, flush and close). */
  private flushTelemetry(): void {
    if (this.pendingPairs === 0) return;
    const pairs = this.pendingTelemetry.subarray(0, this.pendingPairs * 2);
    this.pendingPairs = 0;
    try {
      this.native.registerResolves(pairs);
    } catch {
      // best effort, like the resolver's own telemetry
    }
  }
}

function failed<T>(e: unknown, defaultValue: T): Outcome<T> {
  const { errorCode, message } = classify(e);
  return { details: failure(defaultValue, errorCode, message), telemetry: TELEMETRY_REASON.ERROR };
}

function find(flags: NativeResolvedFlag[], key: FlagKey): NativeResolvedFlag | undefined {
  const name = `flags/${key.name}`;
  return flags.find((f) => f.flag === name);
}

/** Any failure of a resolve as an OpenFeature error code and a readable message. */
function classify(e: unknown): { errorCode: ErrorCode; message: string } {
  if (e instanceof InvalidContextError)
    return { errorCode: ErrorCode.INVALID_CONTEXT, message: `invalid evaluation context: ${e.message}` };
  const own = (e as { code?: unknown } | null)?.code;
  if (own === ErrorCode.PARSE_ERROR) return { errorCode: ErrorCode.PARSE_ERROR, message: (e as Error).message };
  const { code, message } = nativeError(e);
  switch (code) {
    case 'NOT_READY':
      return { errorCode: ErrorCode.PROVIDER_NOT_READY, message };
    case 'INVALID_CONTEXT':
      return { errorCode: ErrorCode.INVALID_CONTEXT, message };
    default:
      return { errorCode: ErrorCode.GENERAL, message };
  }
}
