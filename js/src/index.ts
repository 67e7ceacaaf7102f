export { type ConfidenceReason, openFeatureReason } from './evaluate';
export {
  ConfidenceRemoteStore,
  type InclusionReadOp,
  type InclusionReadResult,
  InMemoryMaterializationStore,
  type MaterializationStore,
  type ReadOp,
  type ReadResult,
  type VariantReadOp,
  type VariantReadResult,
  type VariantWriteOp,
} from './materialization';
export type { ProviderOptions } from './options';
export { type BulkResolveOptions, type BundledFlag, ConfidenceServerProviderLocal, type FlagBundle } from './provider';

import type { ProviderOptions } from './options';
import { ConfidenceServerProviderLocal } from './provider';

/** Same as `new ConfidenceServerProviderLocal(options)` (the official provider's factory name). */
export function createConfidenceServerProvider(options: ProviderOptions): ConfidenceServerProviderLocal {
  return new ConfidenceServerProviderLocal(options);
}
