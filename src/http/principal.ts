export type Role = 'admin' | 'operator' | 'viewer';
export const ROLES: Role[] = ['admin', 'operator', 'viewer'];
const RANK: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };

export function roleAtLeast(have: Role, need: Role): boolean {
  return RANK[have] >= RANK[need];
}

export interface Principal {
  /** Who acts, as written into the audit trail: `token:<name>`, `jwt:<sub>`, `bootstrap`, `cli`. */
  actor: string;
  /** The user a BYOK key belongs to, one namespace per kind of credential: `jwt:<sub>`, `token:<id>`, `bootstrap`, `cli`. */
  user: string;
  role: Role;
  via: 'bootstrap' | 'token' | 'jwt' | 'cli';
}

export interface RequestContext {
  principal: Principal;
  requestId: string;
}

export const CLI_PRINCIPAL: Principal = { actor: 'cli', user: 'cli', role: 'admin', via: 'cli' };
