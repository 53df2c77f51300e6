import { isRole, type Role } from './logic/roles';

/** The token lives in this tab's session storage: gone when the tab closes, never in a cookie or a URL. */
const KEY = 'keyplane.token';

export interface Who {
  actor: string;
  role: Role;
  via: string;
}

export function storedToken(storage: Storage): string | null {
  return storage.getItem(KEY);
}

export function storeToken(storage: Storage, token: string): void {
  storage.setItem(KEY, token);
}

export function forgetToken(storage: Storage): void {
  storage.removeItem(KEY);
}

export function whoFrom(body: unknown): Who {
  const b = (body ?? {}) as Record<string, unknown>;
  if (!isRole(b.role) || typeof b.actor !== 'string') throw new Error('the server did not say who the token belongs to');
  return { actor: b.actor, role: b.role, via: String(b.via ?? '') };
}
