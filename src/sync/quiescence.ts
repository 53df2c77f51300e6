export interface SyncWait {
  minMs: number;
  maxMs: number;
}

export interface Burst {
  /** Nudges folded into this firing. */
  count: number;
  /** When the first of them arrived (ms since the epoch). */
  firstAt: number;
}

/**
 * consul-template's `wait {min, max}`: a burst of nudges fires once, `min` after the last nudge and
 * never later than `max` after the first. With `min` 0 it fires on the next turn of the event loop,
 * which still folds nudges that arrive together (one commit notifies once per changed row).
 */
export class Quiescence {
  private count = 0;
  private firstAt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private immediate: ReturnType<typeof setImmediate> | undefined;

  constructor(
    private readonly wait: SyncWait,
    private readonly fire: (burst: Burst) => void,
    private readonly now: () => number = Date.now,
  ) {}

  nudge(): void {
    const t = this.now();
    if (this.count === 0) this.firstAt = t;
    this.count++;
    if (this.wait.minMs === 0) {
      this.immediate ??= setImmediate(() => this.flush());
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.max(0, Math.min(this.wait.minMs, this.firstAt + this.wait.maxMs - t));
    this.timer = setTimeout(() => this.flush(), delay);
  }

  get pending(): { count: number; since: number | null } {
    return { count: this.count, since: this.count ? this.firstAt : null };
  }

  /** Drops whatever is pending without firing. */
  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    this.count = 0;
  }

  private flush(): void {
    const burst = { count: this.count, firstAt: this.firstAt };
    this.cancel();
    if (burst.count > 0) this.fire(burst);
  }
}
