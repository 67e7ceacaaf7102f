// Turns the native resolver's sync progress into provider events. The addon records swaps and
// fetch outcomes as they happen; this polls them on an unref'd timer (a cheap lock-free read
// plus one short mutex) so no native thread ever calls into JS and nothing keeps Node alive.
//
// Events (the SDK emits READY/ERROR for `initialize` itself):
// - PROVIDER_CONFIGURATION_CHANGED with `flagsChanged` after every swap that changed flags;
// - PROVIDER_STALE when no fresh state (a 200 or a 304) arrived for `staleAfter`;
// - PROVIDER_READY when a state finally loads after a failed `initialize`, or when a stale
//   provider hears from the CDN again.
import { type FlagMetadata, type OpenFeatureEventEmitter, ProviderEvents } from '@openfeature/server-sdk';

import type { NativeResolver } from './native';
import type { ResolvedOptions } from './options';

type Phase = 'NOT_READY' | 'READY' | 'STALE' | 'ERROR';

export class StateWatcher {
  private phase: Phase = 'NOT_READY';
  private timer: NodeJS.Timeout | undefined;
  private etag: string | undefined;
  private fromSnapshot = false;
  private cachedMetadata: FlagMetadata = {};

  constructor(
    private readonly native: NativeResolver,
    private readonly events: OpenFeatureEventEmitter,
    options: ResolvedOptions,
    /** Runs first on every tick: the provider hands its buffered telemetry over. */
    private readonly onTick: () => void = () => {},
  ) {
    this.#options = options;
  }

  /** ES-private: the options hold the client secret (see the provider). */
  readonly #options: ResolvedOptions;

  /** Metadata every evaluation carries: the ETag of the state in force (refreshed each tick). */
  metadata(): FlagMetadata {
    return this.cachedMetadata;
  }

  start(): void {
    if (this.timer) return;
    const every = Math.max(
      50,
      Math.min(1000, Math.floor(this.#options.stateUpdateInterval / 4), this.#options.staleAfter),
    );
    this.timer = setInterval(() => this.tick(), every);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** `initialize` succeeded: the SDK announces READY; the initial load is not a change. */
  ready(): void {
    this.logNotices();
    this.native.takeChangedFlags();
    this.phase = 'READY';
    this.refreshMetadata();
  }

  /** `initialize` failed: the SDK announces ERROR; we announce READY once a state loads. */
  failed(): void {
    this.logNotices();
    this.phase = 'ERROR';
  }

  /** What the addon asked to tell the user (snapshot served or ignored, …). */
  private logNotices(): void {
    for (const { level, message } of this.native.takeNotices()) {
      if (level === 'warn') this.#options.logger.warn(message);
      else this.#options.logger.info(message);
    }
  }

  private refreshMetadata(): string | undefined {
    const { etag, lastSuccessMs, lastError, fromSnapshot } = this.native.status();
    if (etag !== this.etag || fromSnapshot !== this.fromSnapshot) {
      this.etag = etag;
      this.fromSnapshot = fromSnapshot;
      const metadata: FlagMetadata = etag ? { stateEtag: etag } : {};
      if (fromSnapshot) metadata.stateFromSnapshot = true;
      this.cachedMetadata = metadata;
    }
    if (this.#options.offline || lastSuccessMs === undefined) return undefined;
    const age = Date.now() - lastSuccessMs;
    if (age <= this.#options.staleAfter) return undefined;
    return `no fresh flag state for ${Math.round(age / 1000)} s${lastError ? `: ${lastError}` : ''}`;
  }

  private tick(): void {
    try {
      this.onTick();
      this.logNotices();
      if (this.phase === 'NOT_READY') return; // initialize has not finished
      if (this.phase === 'ERROR') {
        if (!this.native.status().ready) return;
        this.native.takeChangedFlags();
        this.phase = 'READY';
        this.refreshMetadata();
        this.events.emit(ProviderEvents.Ready, { message: 'flag state loaded', metadata: this.cachedMetadata });
        return;
      }
      const changed = this.native.takeChangedFlags();
      const stale = this.refreshMetadata();
      if (changed && changed.length > 0) {
        const flagsChanged = changed.map((name) => name.replace(/^flags\//, ''));
        this.events.emit(ProviderEvents.ConfigurationChanged, { flagsChanged, metadata: this.cachedMetadata });
      }
      if (stale && this.phase === 'READY') {
        this.phase = 'STALE';
        this.events.emit(ProviderEvents.Stale, { message: stale });
      } else if (!stale && this.phase === 'STALE') {
        this.phase = 'READY';
        this.events.emit(ProviderEvents.Ready, { message: 'fresh flag state again', metadata: this.cachedMetadata });
      }
    } catch (e) {
      this.#options.logger.error('provider event watcher failed:', e);
    }
  }
}
