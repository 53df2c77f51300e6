import type { Logger } from '../log';

/** An alert event: never carries a secret (names, fingerprints, versions, reasons only). */
export interface AlertEvent {
  type:
    | 'provider.status_changed'
    | 'litellm.status_changed'
    | 'reload.failed'
    | 'key.expiring'
    | 'key.state_changed'
    | 'provider.no_keys'
    | 'provider.keys_restored'
    | 'key.credit_low'
    | 'virtual_key.deletion_failed'
    | 'virtual_key.deletion_recovered';
  at: string;
  instance: string;
  [field: string]: unknown;
}

export interface Alerter {
  send(event: Omit<AlertEvent, 'at' | 'instance'>): Promise<void>;
}

/** Used when KEYPLANE_ALERT_WEBHOOK is unset: alerts go to the log only. */
export class LogAlerter implements Alerter {
  constructor(private readonly log: Logger) {}

  async send(event: Omit<AlertEvent, 'at' | 'instance'>): Promise<void> {
    this.log.info('alert', { event });
  }
}
