import type { FailureStage } from './sync-events';

/** A render that will not be written: the stage that stopped it, and a message fit to show (masked by the syncer). */
export class StageError extends Error {
  constructor(readonly stage: FailureStage, message: string, readonly stderrTail?: string) {
    super(message);
  }
}
