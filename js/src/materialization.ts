// Sticky assignments and materialized segments (docs/resolver.md, "Materializations and the resolve process"): the store users implement,
// an in-memory one, and the mapping between its operations and the resolver's records.
import { type NativeMaterialization, type NativeResolver, nativeError } from './native';

/** "Which variant did `unit` get for `rule` under `materialization`?" */
export interface VariantReadOp {
  op: 'variant';
  unit: string;
  materialization: string;
  rule: string;
}

/** "Is `unit` in the materialized segment `materialization`?" */
export interface InclusionReadOp {
  op: 'inclusion';
  unit: string;
  materialization: string;
}

export type ReadOp = VariantReadOp | InclusionReadOp;

/** `variant` absent = nothing stored for that unit and rule. */
export interface VariantReadResult extends VariantReadOp {
  variant?: string;
}

export interface InclusionReadResult extends InclusionReadOp {
  included: boolean;
}

export type ReadResult = VariantReadResult | InclusionReadResult;

export interface VariantWriteOp {
  op: 'variant';
  unit: string;
  materialization: string;
  rule: string;
  variant: string;
}

/**
 * Where sticky assignments live. Results may come back in any order; they are matched to the
 * reads by op, unit, materialization and rule. Read-only stores leave out `writeMaterializations`.
 */
export interface MaterializationStore {
  readMaterializations(readOps: ReadOp[]): Promise<ReadResult[]>;
  writeMaterializations?(writeOps: VariantWriteOp[]): Promise<void>;
}

/** A store in process memory: for tests and single-process services (lost on restart). */
export class InMemoryMaterializationStore implements MaterializationStore {
  private readonly variants = new Map<string, string>();
  private readonly segments = new Map<string, Set<string>>();

  async readMaterializations(readOps: ReadOp[]): Promise<ReadResult[]> {
    return readOps.map((op) =>
      op.op === 'variant'
        ? { ...op, variant: this.variants.get(variantKey(op)) }
        : { ...op, included: this.segments.get(op.materialization)?.has(op.unit) ?? false },
    );
  }

  async writeMaterializations(writeOps: VariantWriteOp[]): Promise<void> {
    for (const op of writeOps) this.variants.set(variantKey(op), op.variant);
  }

  /** Puts `units` into the materialized segment `materialization` (how segments get filled in tests). */
  include(materialization: string, ...units: string[]): void {
    const set = this.segments.get(materialization) ?? new Set<string>();
    this.segments.set(materialization, set);
    for (const unit of units) set.add(unit);
  }

  /** Everything stored, for assertions: `[materialization, unit, rule, variant]` rows. */
  entries(): [string, string, string, string][] {
    return [...this.variants].map(([key, variant]) => [...(JSON.parse(key) as [string, string, string]), variant]);
  }
}

/**
 * `'CONFIDENCE_REMOTE_STORE'`: the store Confidence keeps, reached by the addon over the same
 * network setup as everything else (proxy, CAs). Reads are bounded (3 attempts of 0.5 s); a
 * failed read makes the evaluation return its default with `GENERAL`.
 */
export class ConfidenceRemoteStore implements MaterializationStore {
  constructor(private readonly native: NativeResolver) {}

  async readMaterializations(readOps: ReadOp[]): Promise<ReadResult[]> {
    const reads = readOps.map((op) => ({ ...op, rule: op.op === 'variant' ? op.rule : '', variant: '' }));
    try {
      const found = await this.native.readRemoteMaterializations(reads);
      return found.map(({ unit, materialization, rule, variant }) =>
        rule
          ? { op: 'variant', unit, materialization, rule, variant }
          : { op: 'inclusion', unit, materialization, included: true },
      );
    } catch (e) {
      throw new Error(`Confidence remote store: ${nativeError(e).message}`, { cause: e });
    }
  }

  async writeMaterializations(writeOps: VariantWriteOp[]): Promise<void> {
    try {
      await this.native.writeRemoteMaterializations(writeOps.map(({ op: _op, ...record }) => record));
    } catch (e) {
      throw new Error(`Confidence remote store: ${nativeError(e).message}`, { cause: e });
    }
  }
}

function variantKey(op: { materialization: string; unit: string; rule: string }): string {
  return JSON.stringify([op.materialization, op.unit, op.rule]);
}

/** The resolver's read queries as store operations (`rule` empty = inclusion). */
export function toReadOps(records: NativeMaterialization[]): ReadOp[] {
  return records.map(({ unit, materialization, rule }) =>
    rule ? { op: 'variant', unit, materialization, rule } : { op: 'inclusion', unit, materialization },
  );
}

/** Store results as resolver records; negatives are left out (absence means "none"). */
export function toRecords(results: ReadResult[]): NativeMaterialization[] {
  if (!Array.isArray(results)) throw new TypeError('readMaterializations must resolve to an array');
  const records: NativeMaterialization[] = [];
  for (const r of results) {
    if (r?.op === 'variant' && typeof r.variant === 'string' && r.variant) {
      records.push({ unit: r.unit, materialization: r.materialization, rule: r.rule, variant: r.variant });
    } else if (r?.op === 'inclusion' && r.included === true) {
      records.push({ unit: r.unit, materialization: r.materialization, rule: '', variant: '' });
    }
  }
  return records;
}

export function toWriteOps(records: NativeMaterialization[]): VariantWriteOp[] {
  return records.map(({ unit, materialization, rule, variant }) => ({
    op: 'variant',
    unit,
    materialization,
    rule,
    variant,
  }));
}
