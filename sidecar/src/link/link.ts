import type { Logger } from '../logger';
import { type ReconnectSchedule, nextDelay, parseReconnectSchedule } from '../reconnect-schedule';
import type { StateHolder } from '../state';
import { type Clock, systemClock } from './clock';
import { type LinkEvent, transition } from './transition';

/** What the Link asks of a carrier (TCP, HTTP tunnel, a test's fake): one attempt at a time. */
export interface LinkCarrier {
  /**
   * Start one attempt to `hosts[host]`. The carrier then reports `link.up(cause)` when the session
   * is active, and `link.down(cause)` when the attempt fails or the session ends.
   */
  dial(host: number): void;
}

export interface LinkOptions {
  /** The hosts tried in turn, as "host:port" (for logs and messages). At least one. */
  readonly hosts: readonly string[];
  readonly schedule: ReconnectSchedule;
  /** Unreachable this long (since start or since the loss): standby. */
  readonly standbyAfterMs: number;
  /** This many failed rounds over all hosts: muted. 0 = never. */
  readonly muteAfterAttempts: number;
  readonly random?: () => number;
  readonly clock?: Clock;
}

/** The options of a Link that is never started: a transport with no upstream (debug). */
export const NO_UPSTREAM: LinkOptions = {
  hosts: ['none'],
  schedule: parseReconnectSchedule('1x0,stop'),
  standbyAfterMs: 0,
  muteAfterAttempts: 0,
};

/** What the Link is doing now; `step()` looks at it to take the next step. */
type Phase =
  | 'idle' // the next step is due: dial the next host, or schedule the next round
  | 'dialing' // an attempt is under way (connect, handshake, configuration, license)
  | 'up' // the session is active
  | 'waiting' // the reconnect timer runs
  | 'gave-up' // the schedule ended in `stop`: only an operator reconnect goes on
  | 'closed';

/** Everything that moves the Link, from carriers, the operator and its own timers. */
type Input =
  | { readonly type: 'start' }
  | { readonly type: 'up'; readonly cause: string }
  | { readonly type: 'down'; readonly cause: string }
  | { readonly type: 'operator-reconnect' }
  | { readonly type: 'attempt-timer' }
  | { readonly type: 'standby-timer' }
  | { readonly type: 'close' };

/**
 * The link to the collector: the one owner of the disconnected timeline (DESIGN §6).
 *
 * It owns the timers (next attempt, standby) and the attempt accounting, and it alone writes
 * the sidecar state, through `transition()`. Carriers report what happened (`up`, `down`) and
 * are told when to dial; they never set a state.
 *
 * Attempts: after a loss every other host is tried once at once (failover); when a whole round
 * (every host once) fails, the next round waits for the reconnect schedule. A schedule that
 * ends in `stop` leaves the state `stopped` until `reconnect()` (`apm-sidecar reconnect`, SIGHUP).
 *
 * Every input goes through `step()`, which is re-entrancy guarded: a carrier that reports `down`
 * from inside `dial` has its report queued and handled after the current one.
 */
export class Link {
  private readonly clock: Clock;
  private carrier: LinkCarrier | null = null;
  private phase: Phase = 'idle';
  private host = 0;
  /** Hosts still to try in the current round. */
  private roundLeft = 0;
  /** Scheduled rounds since the last active session (the schedule's attempt index). */
  private attempts = 0;
  /** Rounds over all hosts that failed since the last active session (mute_after_attempts). */
  private failedRounds = 0;
  private everActive = false;
  private dials = 0;
  private lastCause = 'start';
  private attemptTimer: unknown = null;
  private nextAttemptAt: number | null = null;
  private standbyTimer: unknown = null;
  /** Since when no session has been active (null while active). */
  private unreachableSince: number | null = null;
  private readonly inbox: Input[] = [];
  private stepping = false;

  constructor(
    private readonly holder: StateHolder,
    private readonly log: Logger,
    private readonly opts: LinkOptions,
  ) {
    this.clock = opts.clock ?? systemClock;
  }

  /** The host of the current (or next) attempt, as "host:port". */
  get server(): string {
    return this.opts.hosts[this.host] as string;
  }

  /** Begin: unreachable from now, first attempt at once. */
  start(carrier: LinkCarrier): void {
    this.carrier = carrier;
    this.step({ type: 'start' });
  }

  /** The carrier's session is active (handshake, configuration and license done). */
  up(cause: string): void {
    this.step({ type: 'up', cause });
  }

  /** The carrier's attempt failed or its session ended. */
  down(cause: string): void {
    this.step({ type: 'down', cause });
  }

  /** `apm-sidecar reconnect` / SIGHUP: try now, and from `stopped` start the timeline again. */
  reconnect(): { ok: boolean; message: string } {
    if (this.phase === 'up') return { ok: true, message: `already connected to ${this.server}` };
    if (this.phase === 'dialing') return { ok: true, message: `already connecting to ${this.server}` };
    if (this.phase === 'closed') return { ok: false, message: 'shutting down' };
    const message = `reconnecting to ${this.server}`;
    this.step({ type: 'operator-reconnect' });
    return { ok: true, message };
  }

  close(): void {
    this.step({ type: 'close' });
  }

  status(): Record<string, unknown> {
    return {
      phase: this.phase,
      attempts: this.attempts,
      failedAttempts: this.failedRounds,
      unreachableSince: this.unreachableSince === null ? null : new Date(this.unreachableSince).toISOString(),
      nextAttemptAt: this.nextAttemptAt === null ? null : new Date(this.nextAttemptAt).toISOString(),
      reconnectAttempts: this.dials,
    };
  }

  // --- the one step function -------------------------------------------------

  private step(input: Input): void {
    this.inbox.push(input);
    if (this.stepping) return;
    this.stepping = true;
    try {
      for (let next = this.inbox.shift(); next !== undefined; next = this.inbox.shift()) {
        this.handle(next);
        this.advance();
      }
    } finally {
      this.stepping = false;
    }
  }

  /** Account for one input; state changes go through `transition()` only. */
  private handle(input: Input): void {
    if (this.phase === 'closed') return;
    const n = this.opts.hosts.length;
    switch (input.type) {
      case 'start':
        this.roundLeft = n;
        this.becameUnreachable();
        return;
      case 'up':
        this.phase = 'up';
        this.everActive = true;
        this.attempts = 0;
        this.failedRounds = 0;
        this.unreachableSince = null;
        this.cancelTimers();
        this.apply({ type: 'session-active', cause: input.cause });
        return;
      case 'down': {
        if (this.phase !== 'dialing' && this.phase !== 'up') return;
        const wasUp = this.phase === 'up';
        this.phase = 'idle';
        this.lastCause = input.cause;
        this.host = (this.host + 1) % n;
        if (wasUp) {
          this.apply({ type: 'session-lost', cause: input.cause });
          this.becameUnreachable();
          // Fail over: every other host once, right away.
          this.roundLeft = n - 1;
        } else if (this.roundLeft === 0) {
          this.failedRounds++;
          this.apply({ type: 'attempt-failed', failed: this.failedRounds, muteAfterAttempts: this.opts.muteAfterAttempts, cause: input.cause });
        }
        return;
      }
      case 'operator-reconnect':
        if (this.phase !== 'waiting' && this.phase !== 'gave-up' && this.phase !== 'idle') return;
        this.cancelAttemptTimer();
        this.phase = 'idle';
        this.attempts = 0;
        this.roundLeft = n;
        if (this.holder.state === 'stopped') {
          // A fresh start of the disconnected timeline: standby and mute are counted again from now.
          this.failedRounds = 0;
          this.becameUnreachable();
          this.apply({ type: 'operator-reconnect', everActive: this.everActive });
        }
        return;
      case 'attempt-timer':
        this.attemptTimer = null;
        this.nextAttemptAt = null;
        this.phase = 'idle';
        this.roundLeft = n;
        return;
      case 'standby-timer':
        this.standbyTimer = null;
        this.apply({ type: 'standby-timer', standbyAfterMs: this.opts.standbyAfterMs });
        return;
      case 'close':
        this.phase = 'closed';
        this.cancelTimers();
        return;
    }
  }

  /** Take the next step the phase calls for: dial, schedule the next round, or give up. */
  private advance(): void {
    if (this.phase !== 'idle' || this.carrier === null) return;
    if (this.roundLeft > 0) {
      this.roundLeft--;
      this.dials++;
      this.phase = 'dialing';
      this.log.info({ server: this.server, attempt: this.attempts }, 'connecting upstream');
      this.carrier.dial(this.host);
      return;
    }
    const delay = nextDelay(this.opts.schedule, this.attempts, this.opts.random);
    if (delay === 'stop') {
      this.phase = 'gave-up';
      // Nothing is scheduled in `stopped`: not even the standby clock.
      this.cancelTimers();
      this.apply({ type: 'schedule-exhausted', attempts: this.attempts, cause: this.lastCause });
      return;
    }
    this.attempts++;
    this.phase = 'waiting';
    this.nextAttemptAt = this.clock.now() + delay;
    this.log.info({ attempt: this.attempts, delayMs: delay, event: 'reconnect-scheduled' }, `next upstream attempt in ${delay} ms`);
    this.attemptTimer = this.clock.setTimeout(() => this.step({ type: 'attempt-timer' }), delay);
  }

  /** The only place the state is written: one log line `from → to` with the cause (StateHolder.set). */
  private apply(event: LinkEvent): void {
    const t = transition(this.holder.state, event);
    if (t.cause !== null && t.state !== this.holder.state) this.holder.set(t.state, t.cause, this.clock.now());
  }

  /** Start the standby clock: still unreachable after standby_after_ms → standby. */
  private becameUnreachable(): void {
    this.unreachableSince = this.clock.now();
    if (this.standbyTimer !== null) this.clock.clearTimeout(this.standbyTimer);
    this.standbyTimer = this.clock.setTimeout(() => this.step({ type: 'standby-timer' }), this.opts.standbyAfterMs);
  }

  private cancelAttemptTimer(): void {
    if (this.attemptTimer !== null) this.clock.clearTimeout(this.attemptTimer);
    this.attemptTimer = null;
    this.nextAttemptAt = null;
  }

  private cancelTimers(): void {
    this.cancelAttemptTimer();
    if (this.standbyTimer !== null) this.clock.clearTimeout(this.standbyTimer);
    this.standbyTimer = null;
  }
}
