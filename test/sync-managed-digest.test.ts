import { managedStateDigest } from '../src/sync/sync-tasks';
import type { DesiredState } from '../src/sync/desired-state';

/**
 * In litellm-api mode the files may not change when what LiteLLM must hold does: the digest that
 * decides whether to send is taken over everything eligibility reads.
 */
describe('managedStateDigest', () => {
  const base = (): DesiredState => ({
    keys: [{ name: 'openai', envVar: 'OPENAI_API_KEY', version: 1, value: 'sk-digest-value-0001', fingerprint: 'hmac-sha256:aa', expiresAt: null, state: 'active' }],
    providers: [{ slug: 'openai', kind: 'openai', apiBase: null, keyName: 'openai', keys: [{ name: 'openai', weight: 1 }], enabled: true }],
    models: [],
    routing: { aliases: {}, fallbacks: {} },
    approvals: [{ keyName: 'openai', destination: 'https://api.openai.com' }],
    authRequired: false,
  });

  it('changes with a key state and with an approval, and not with their order', () => {
    const d = managedStateDigest(base());
    const disabled = base();
    disabled.keys[0]!.state = 'disabled';
    expect(managedStateDigest(disabled)).not.toBe(d);
    const revoked = base();
    revoked.approvals = [];
    expect(managedStateDigest(revoked)).not.toBe(d);
    const twice = base();
    twice.approvals = [{ keyName: 'other', destination: 'https://x.example' }, ...twice.approvals];
    const reordered = base();
    reordered.approvals = [...reordered.approvals, { keyName: 'other', destination: 'https://x.example' }];
    expect(managedStateDigest(twice)).toBe(managedStateDigest(reordered));
    expect(managedStateDigest(base())).toBe(d);
  });
});
