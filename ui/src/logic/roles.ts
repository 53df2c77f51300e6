/** What each role may do in the dashboard: the buttons shown. The API enforces the same on its own. */

export type Role = 'admin' | 'operator' | 'viewer';

export type Action = 'rotate' | 'disable' | 'rollback' | 'delete-key' | 'sync-now' | 'health-check' | 'virtual-key-issue' | 'virtual-key-delete' | 'audit';

const RANK: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };

// As the admin API's route table says (access per route): operators change keys; admins read the
// audit trail and issue virtual keys (create, rotate: each hands out a working credential), which
// operators may only delete (cutting a leaked one off).
const NEEDS: Record<Action, Role> = {
  rotate: 'operator',
  disable: 'operator',
  rollback: 'operator',
  'delete-key': 'operator',
  'sync-now': 'operator',
  'health-check': 'operator',
  'virtual-key-issue': 'admin',
  'virtual-key-delete': 'operator',
  audit: 'admin',
};

export function isRole(v: unknown): v is Role {
  return v === 'admin' || v === 'operator' || v === 'viewer';
}

export function can(role: Role, action: Action): boolean {
  return RANK[role] >= RANK[NEEDS[action]];
}

export type PageId = 'overview' | 'keys' | 'virtual-keys' | 'models' | 'sync' | 'audit';

export const PAGES: Array<{ id: PageId; title: string; needs?: Action }> = [
  { id: 'overview', title: 'Overview' },
  { id: 'keys', title: 'Keys' },
  { id: 'virtual-keys', title: 'Virtual keys' },
  { id: 'models', title: 'Models and routing' },
  { id: 'sync', title: 'Sync' },
  { id: 'audit', title: 'Audit', needs: 'audit' },
];

export function pagesFor(role: Role): Array<{ id: PageId; title: string }> {
  return PAGES.filter((p) => !p.needs || can(role, p.needs)).map(({ id, title }) => ({ id, title }));
}

/** `#/keys` -> keys; anything else is the overview. */
export function pageFromHash(hash: string): PageId {
  const id = hash.replace(/^#\/?/, '').split(/[/?]/)[0];
  return PAGES.some((p) => p.id === id) ? (id as PageId) : 'overview';
}
