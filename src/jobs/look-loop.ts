/**
 * A job that looks at durable work (deadlines in the database) now and again: when nudged (once
 * more after a look in progress, never two at a time), and after the wait each look asks for.
 * Stopping waits for a look in progress; a stopped loop looks no more.
 */
export class LookLoop {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private halted = true;

  /** `look` does one pass and returns how long to wait before the next one (it handles its own errors). */
  constructor(private readonly look: () => Promise<number>) {}

  get stopped(): boolean {
    return this.halted;
  }

  start(): void {
    if (!this.halted) return;
    this.halted = false;
    this.nudge();
  }

  async stop(): Promise<void> {
    this.halted = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.running) await this.running;
  }

  /** Looks now (once more after the current look, when one runs). */
  nudge(): void {
    if (this.halted) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => (this.running = undefined));
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      const wait = await this.look();
      if (!this.halted) {
        this.timer = setTimeout(() => this.nudge(), wait);
        this.timer.unref();
      }
    } while (this.again && !this.halted);
  }
}
