/** The admin API's answers, as far as the pages read them. */

export interface KeyHealth {
  outcome: string;
  http_status: number | null;
  checked_at: string;
  credit: { limit: number | null; usage: number | null; remaining: number | null; low: boolean } | null;
}

export interface PoolKey {
  name: string;
  weight: number;
  has_key: boolean;
  state: string | null;
  state_reason: string | null;
  state_since: string | null;
  health: KeyHealth | null;
}

export interface Provider {
  slug: string;
  kind: string;
  api_base: string | null;
  keys: PoolKey[];
  keys_in_service: number;
  enabled: boolean;
  active: boolean;
}

export interface ProviderHealth {
  slug: string;
  kind: string;
  enabled: boolean;
  status: string;
  reason: string | null;
  latency_ms: number | null;
  http_status: number | null;
  detail: string | null;
  checked_at: string | null;
  changed_at: string | null;
  key: { name: string; version: number | null; current_version: number | null; expires_at: string | null; expiring: boolean; expired: boolean };
}

export interface LitellmHealth {
  url: string;
  status: string;
  reason: string | null;
  latency_ms: number | null;
  version: string | null;
  checked_at: string;
}

export interface HealthList {
  items: ProviderHealth[];
  litellm: LitellmHealth | null;
  expiring_keys: Array<{ name: string; version: number; expires_at: string; days_left: number; expired: boolean }>;
}

export interface ReloadRun {
  revision: number;
  status: string;
  started_at: string;
  finished_at: string | null;
  error: string | null;
  targets?: Array<{ target: string; status: string; error: string | null }>;
}

export interface SyncStatus {
  alert?: string;
  instance: string;
  leader: { instance: string | null; this_instance: boolean };
  revision: { revision: number; created_at: string; trigger: string } | null;
  files: Record<string, { path: string; exists: boolean; sha256?: string | null; digest?: string | null }>;
  last_render: { status: string; trigger: string; at: string; duration_ms: number | null; error: unknown } | null;
  pending: { changes: number; rendering: boolean; reload: { generation: number } | null };
  last_reload: { reloader: string; running: { revision: number; since: string } | null; last: ReloadRun | null } | { error: string } | null;
}

export interface PlatformKey {
  name: string;
  env_var: string;
  masked_key: string;
  fingerprint: string;
  version: number;
  expires_at: string | null;
  created_at: string;
  updated_at: string;
  state: string;
  state_reason: string | null;
  state_note?: string;
  state_since: string;
  replaced_by?: string;
}

export interface KeyVersion {
  version: number;
  masked_key: string;
  fingerprint: string;
  created_at: string;
  expires_at: string | null;
  current: boolean;
}
