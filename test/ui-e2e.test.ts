import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startTestApp, type TestApp } from './helpers/app';
import { FakeLitellm } from './helpers/fake-litellm';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { until } from './helpers/wait';

/**
 * Issue 13: the dashboard end to end, in Debian's Chromium driven by playwright-core, against the
 * whole keyplane (real Postgres, sync, reloads, prober) and a fake provider that can start refusing
 * a key. The steps run in order on one signed-in page, as an on-call admin would go through them;
 * that is why this is one file past 400 lines: split, each part would start its own keyplane and browser.
 */

jest.setTimeout(60_000);

const ARTIFACTS = path.join(__dirname, '..', 'test-artifacts', 'ui');
const CHROMIUM = '/usr/bin/chromium';
const OR_V1 = 'sk-or-v1-e2e-first-value-0001';
const OR_V2 = 'sk-or-v1-e2e-second-value-0002';
const OR_BAD = 'sk-or-v1-e2e-refused-value-0003';
const OA_MAIN = 'sk-oa-e2e-main-value-0004';
const OA_SPARE = 'sk-oa-e2e-spare-value-0005';
const JWT_SECRET = 'e2e-jwt-secret-that-is-long-enough-for-hs256';
const LITELLM_MASTER = 'sk-litellm-master-e2e-0007';
const OLD_VALUE = 'sk-e2e-old-key-value-0006';
const SECRETS = [OR_V1, OR_V2, OR_BAD, OA_MAIN, OA_SPARE, OLD_VALUE, LITELLM_MASTER];
const XSS = '<img src=x onerror="globalThis.__xss=1">leaked?';

// The browser's globals, as far as the functions run inside the page use them (the tests compile without the DOM library).
interface InPage {
  id: string;
  tagName: string;
  outerHTML: string;
  textContent: string | null;
  innerHTML: string;
  labels?: Iterable<InPage> | null;
  getAttribute(name: string): string | null;
}
declare const document: { querySelectorAll(selector: string): Iterable<InPage>; createElement(tag: string): InPage; activeElement: InPage | null; documentElement: { scrollWidth: number } };
declare const window: { innerWidth: number };

let fake: FakeProvider;
let litellm: FakeLitellm;
let t: TestApp;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const problems: string[] = [];
const requested: string[] = [];

function watch(p: Page): void {
  p.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  p.on('console', (m) => {
    // Chromium logs every 4xx it was answered; the steps that cause them check what the page showed.
    if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  p.on('request', (r) => requested.push(r.url()));
}

const card = (slug: string) => page.locator(`article[data-provider="${slug}"]`);
const keyRow = (name: string) => page.locator(`tr[data-key="${name}"]`);
const revision = async (): Promise<number> => Number(await page.locator('[data-glance="sync-revision"] .revision').textContent());

async function go(p: Page, link: string, heading: string): Promise<void> {
  await p.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: link, exact: true }).click();
  await p.getByRole('heading', { level: 1, name: heading }).waitFor();
}

/** Every control has a label, every button a name (what a screen reader announces). */
async function expectLabelled(p: Page): Promise<void> {
  const unlabelled = await p.evaluate(() => {
    const bad: string[] = [];
    for (const el of document.querySelectorAll('input, select, textarea')) {
      const label = [...(el.labels ?? [])].map((l) => l.textContent ?? '').join('').trim() || el.getAttribute('aria-label');
      if (!label) bad.push(`${el.tagName} ${el.id}`);
    }
    for (const b of document.querySelectorAll('button, a')) if (!(b.getAttribute('aria-label') || (b.textContent ?? '').trim())) bad.push(b.outerHTML);
    return bad;
  });
  expect(unlabelled).toEqual([]);
}

/** No stored key value anywhere in the page, ever. */
async function expectNoSecret(p: Page): Promise<void> {
  const html = await p.content();
  for (const v of SECRETS) expect(html.includes(v) ? `${v.slice(-4)} shown` : 'not shown').toBe('not shown');
}

async function healthRound(): Promise<void> {
  await t.api().post('/api/v1/admin/llm/health/check').expect(200);
}

beforeAll(async () => {
  // Missing is a failure, not a skip: .ci/run installs it.
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (Debian's package; .ci/run installs it)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  fake = await startFakeProvider();
  // LiteLLM with its database: its health for the overview, its /key/* API for virtual keys.
  litellm = await FakeLitellm.start({ masterKey: LITELLM_MASTER });
  t = await startTestApp({
    // Each virtual key LiteLLM hands out may be in one answer only, and nowhere else.
    shownOnce: () => litellm.vkeys.issued,
    env: {
      KEYPLANE_RELOAD: 'command',
      KEYPLANE_RELOAD_COMMAND: 'true',
      KEYPLANE_LITELLM_URL: litellm.url,
      KEYPLANE_LITELLM_MASTER_KEY: LITELLM_MASTER,
      KEYPLANE_HEALTH_FAIL_THRESHOLD: '1',
      KEYPLANE_HEALTH_RECOVER_THRESHOLD: '1',
      KEYPLANE_JWT_SECRET: JWT_SECRET,
    },
  });
  const api = t.api;
  for (const [name, value] of [['openrouter', OR_V1], ['oa-main', OA_MAIN], ['oa-spare', OA_SPARE]] as const) {
    await api().put(`/api/v1/admin/platform-keys/${name}`).send({ api_key: value }).expect(200);
  }
  // A key nobody uses, expiring in 5 days: it must stand out, and it is the one deleted.
  await api().put('/api/v1/admin/platform-keys/old-key').send({ api_key: OLD_VALUE, expires_at: new Date(Date.now() + 5.5 * 86_400_000).toISOString() }).expect(200);
  // OpenRouter's model list answers any key; its key record proves the key and reports credit.
  fake.publicModels('or', true);
  fake.setCredit('or', OR_V1, { limit: 100, usage: 25 });
  fake.keyAnswer('or', OR_BAD, 'unauthorized');
  // Two of the providers keyplane is seeded with, pointed at the fake (the others have no key and are never probed).
  await api().put('/api/v1/admin/providers/openrouter').send({ kind: 'openrouter', api_base: `${fake.base('or')}/api/v1`, key_name: 'openrouter' }).expect(200);
  await api().put('/api/v1/admin/providers/openai').send({ kind: 'openai', api_base: fake.base('oa'), keys: [{ name: 'oa-main', weight: 3 }, { name: 'oa-spare' }] }).expect(200);
  await api().post('/api/v1/admin/models').send({ model_name: 'gpt-4o-mini', provider: 'openai', model: 'gpt-4o-mini' }).expect(201);
  await api().post('/api/v1/admin/models').send({ model_name: 'claude', provider: 'openrouter', model: 'anthropic/claude-3.5-sonnet' }).expect(201);
  await api().put('/api/v1/admin/routing').send({ aliases: { balanced: 'gpt-4o-mini' }, fallbacks: { 'gpt-4o-mini': ['claude'] } }).expect(200);
  // Two rounds: every provider has a status and a chart with a line.
  await healthRound();
  await healthRound();

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  // A step that fails says so in seconds, not after playwright's 30 s.
  page.setDefaultTimeout(10_000);
  watch(page);
});

afterAll(async () => {
  await browser?.close();
  await t?.close();
  await litellm?.stop();
  await fake?.close();
});

it('signs in (a wrong token gets the API\'s own problem), and shows the seeded providers', async () => {
  await page.goto(`${t.kp.url}/ui/`);
  const token = page.getByLabel('API token or JWT');
  await token.fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const refused = page.getByRole('alert');
  await refused.waitFor();
  expect(await refused.textContent()).toContain('Unauthorized');
  expect(await refused.textContent()).toContain('the bearer token is not valid');

  await token.fill(t.adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  await card('openrouter').waitFor();
  // Worst first; the seeded providers without a key were never probed and come last.
  expect(await page.locator('article[data-provider]').evaluateAll((cards) => cards.map((c) => c.getAttribute('data-provider')))).toEqual([
    'openai', 'openrouter', 'anthropic', 'fireworks', 'gemini', 'groq', 'together',
  ]);
  expect(await card('anthropic').textContent()).toContain('unknown');
  for (const slug of ['openrouter', 'openai']) {
    const text = await card(slug).textContent();
    expect(text).toContain('healthy');
    expect(text).toMatch(/Latency \d+ ms/);
    expect(await card(slug).getByRole('img').getAttribute('aria-label')).toMatch(/^Latency: 2 probes, latency/);
  }
  expect(await card('openai').locator('li[data-key="oa-spare"]').textContent()).toContain('in service');
  expect(await page.locator('[data-glance="litellm"]').textContent()).toContain('live (healthy)');
  expect(await revision()).toBeGreaterThan(0);
  expect(await page.locator('.live-state').textContent()).toBe('live');
  await page.screenshot({ path: path.join(ARTIFACTS, 'overview.png'), fullPage: true });
});

it('rotates a key (a refused one first, with the API\'s own problem): the new version shows, and the sync revision advances', async () => {
  const before = await revision();
  await go(page, 'Keys', 'Keys');
  expect(await keyRow('openrouter').locator('[data-version]').textContent()).toBe('1');
  expect(await keyRow('openrouter').textContent()).toContain('75.00 of 100 left (75%)');

  await page.getByRole('button', { name: 'Rotate openrouter' }).click();
  const dialog = page.getByRole('dialog', { name: 'Rotate openrouter' });
  await dialog.getByLabel('New key for openrouter').fill(OR_BAD);
  expect(await dialog.getByLabel(/Validate with the provider/).isChecked()).toBe(true);
  await dialog.getByRole('button', { name: 'Rotate' }).click();
  const refused = dialog.getByRole('alert');
  await refused.waitFor();
  expect(await refused.textContent()).toMatch(/422/);
  expect(await refused.textContent()).toMatch(/auth_failed|refused/);

  await dialog.getByLabel('New key for openrouter').fill(OR_V2);
  await dialog.getByRole('button', { name: 'Rotate' }).click();
  await dialog.waitFor({ state: 'detached' });
  const notice = await page.locator('.notice').textContent();
  expect(notice).toContain('openrouter rotated: now version 2');
  expect(notice).toContain('0002');
  await keyRow('openrouter').locator('[data-version="2"]').waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, 'keys.png'), fullPage: true });

  await go(page, 'Overview', 'Overview');
  await until('the revision advances', async () => (await revision()) > before, 15_000);
});

it('rolls the key back from its versions: a new version with the old value', async () => {
  await go(page, 'Keys', 'Keys');
  await page.getByRole('button', { name: 'Versions of openrouter' }).click();
  const dialog = page.getByRole('dialog', { name: 'Versions of openrouter' });
  await dialog.getByRole('button', { name: 'Roll openrouter back to version 1' }).click();
  await dialog.waitFor({ state: 'detached' });
  expect(await page.locator('.notice').textContent()).toContain('openrouter rolled back: version 3 now holds the value of version 1');
  await keyRow('openrouter').locator('[data-version="3"]').waitFor();
  expect(await keyRow('openrouter').textContent()).toContain(OR_V1.slice(-4));
});

it('shows a provider turn down and its key leave service when the provider starts refusing the key, without a reload of the page', async () => {
  await go(page, 'Overview', 'Overview');
  await page.evaluate(() => ((globalThis as unknown as { sameDocument: boolean }).sameDocument = true));
  expect(await card('openrouter').textContent()).toContain('healthy');
  fake.keyAnswer('or', OR_V1, 'unauthorized');
  // The prober's round, as its schedule would run it: the page hears of it through the event stream.
  await healthRound();
  await until('the card says down', async () => /down\s+auth_failed/.test((await card('openrouter').textContent()) ?? ''), 15_000);
  await until('the key is out', async () => /out of service \(auth_failed\)/.test((await card('openrouter').locator('li[data-key="openrouter"]').textContent()) ?? ''), 15_000);
  await until('the sync alert shows', async () => /no key in service/.test((await page.getByRole('alert').first().textContent()) ?? ''), 15_000);
  expect(await page.evaluate(() => (globalThis as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
  // Worst first now.
  expect(await page.locator('article[data-provider]').first().getAttribute('data-provider')).toBe('openrouter');
  expect(await page.locator('[data-glance="pool-keys"]').textContent()).toBe('2 in service, 1 out of service');
  expect(await card('openrouter').getByRole('img').getAttribute('aria-label')).toMatch(/1 failed/);
});

it('takes a key out of service with a reason shown as text, never as markup, and puts it back', async () => {
  await go(page, 'Keys', 'Keys');
  await page.getByRole('button', { name: 'Disable oa-spare' }).click();
  const dialog = page.getByRole('dialog', { name: 'Take oa-spare out of service' });
  await dialog.getByLabel(/Reason/).fill(XSS);
  await dialog.getByRole('button', { name: 'Disable' }).click();
  await dialog.waitFor({ state: 'detached' });
  await until('the row says so', async () => /out of service \(manual\)/.test((await keyRow('oa-spare').textContent()) ?? ''));
  expect(await keyRow('oa-spare').textContent()).toContain(XSS);
  expect(await keyRow('oa-spare').locator('img').count()).toBe(0);
  expect(await page.evaluate(() => (globalThis as unknown as { __xss?: number }).__xss)).toBeUndefined();
  // Trusted Types with no policy: even a mistaken innerHTML would throw instead of parsing.
  const reported = problems.length;
  expect(await page.evaluate(() => {
    try {
      document.createElement('div').innerHTML = '<b>x</b>';
      return 'parsed';
    } catch (err) {
      return (err as Error).name;
    }
  })).toBe('TypeError');
  // Chromium reports the refusal; it was this step's own, and the last step checks that there were no others.
  await until('the refusal is reported', () => problems.length > reported);
  expect(problems.splice(reported)).toEqual(["console: This document requires 'TrustedHTML' assignment. The action has been blocked."]);

  await page.getByRole('button', { name: 'Enable oa-spare' }).click();
  await until('back in service', async () => /in service/.test((await keyRow('oa-spare').locator('.badge').first().textContent()) ?? ''));
  await expectNoSecret(page);
});

it('makes an expiring key stand out, and deletes it only after its name is typed', async () => {
  expect(await keyRow('old-key').locator('.expiry-expiring').textContent()).toMatch(/⚠ expires in 5 days/);
  await page.getByRole('button', { name: 'Delete old-key' }).click();
  const dialog = page.getByRole('dialog', { name: 'Delete old-key?' });
  expect(await dialog.textContent()).toContain('This deletes the key old-key (OLD_KEY)');
  const confirm = dialog.getByRole('button', { name: 'Delete old-key' });
  expect(await confirm.isDisabled()).toBe(true);
  await dialog.getByLabel('Type old-key to confirm').fill('old-ke');
  expect(await confirm.isDisabled()).toBe(true);
  await dialog.getByLabel('Type old-key to confirm').fill('old-key');
  await confirm.click();
  await dialog.waitFor({ state: 'detached' });
  await keyRow('old-key').waitFor({ state: 'detached' });
  expect(await page.locator('.notice').textContent()).toBe('old-key deleted.');
  await expectLabelled(page);
});

it('sync: the next render with values masked, its diff, revisions, and sync now', async () => {
  await go(page, 'Sync', 'Sync');
  const env = page.locator('[data-file-body="litellm.env"]');
  await env.waitFor({ state: 'attached' });
  // openrouter's only key is out of service by now: the other keys are rendered, masked.
  expect(await env.textContent()).toContain('OA_MAIN_API_KEY=****0004');
  expect(await page.locator('[data-file="config.yaml"] h3').textContent()).toContain('config.yaml');
  expect(await page.getByRole('table', { name: 'Revisions, newest first' }).locator('tbody tr').count()).toBeGreaterThan(1);
  await page.getByRole('button', { name: 'Sync now' }).click();
  await until('the render says what it did', async () => /^Rendered: /.test((await page.locator('.notice').textContent()) ?? ''));
  await page.screenshot({ path: path.join(ARTIFACTS, 'sync.png'), fullPage: true });
  await expectNoSecret(page);
  await expectLabelled(page);
});

it('audit: the chain holds, and the entries filter by target', async () => {
  await go(page, 'Audit', 'Audit');
  await page.locator('[data-chain="intact"]').waitFor();
  await page.getByLabel('Target').fill('platform_key/openrouter');
  await page.getByRole('button', { name: 'Filter', exact: true }).click();
  const only = async (target: string): Promise<boolean> => {
    const targets = await page.locator('tbody td[data-label="Target"]').allTextContents();
    return targets.length > 0 && targets.every((x) => x === target);
  };
  await until('only openrouter rows', () => only('platform_key/openrouter'));
  const actions = await page.locator('tbody td[data-label="Action"]').allTextContents();
  expect(actions.some((a) => /rollback/.test(a))).toBe(true);
  // A target in the list filters by itself.
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.getByRole('button', { name: 'Show only platform_key/oa-spare' }).first().click();
  await until('only oa-spare rows', () => only('platform_key/oa-spare'));
  expect(await page.getByLabel('Target').inputValue()).toBe('platform_key/oa-spare');
  await expectNoSecret(page);
});

it('models and routing: deployments per model name, aliases and fallbacks', async () => {
  await go(page, 'Models and routing', 'Models and routing');
  await page.locator('[data-model="gpt-4o-mini"]').waitFor();
  expect(await page.locator('[data-model="claude"]').textContent()).toContain('anthropic/claude-3.5-sonnet');
  expect(await page.locator('.routes').first().textContent()).toContain('balanced points to gpt-4o-mini');
  expect(await page.locator('.routes').nth(1).textContent()).toContain('gpt-4o-mini falls back to claude');
});

it('virtual keys: create (the key shown once), rotate with a grace period, delete, against the fake LiteLLM admin API', async () => {
  await go(page, 'Virtual keys', 'Virtual keys');
  await page.getByRole('button', { name: 'Create virtual key…' }).click();
  const create = page.getByRole('dialog', { name: 'Create a virtual key' });
  await expectLabelled(page);
  await create.getByLabel('Alias').fill('team-a');
  await create.getByLabel('Models').fill('gpt-4o-mini, claude');
  await create.getByLabel('Max budget').fill('50');
  await create.getByLabel('Budget period').fill('monthly');
  await create.getByRole('button', { name: 'Create' }).click();
  // Checked before it is sent: nothing reached keyplane, nor LiteLLM.
  expect(await create.getByRole('alert').textContent()).toContain('budget_duration: must be a whole number and s, m, h, d, w or mo');
  expect(litellm.vkeys.issued).toHaveLength(0);
  await create.getByLabel('Budget period').fill('30d');
  await create.getByLabel('Valid for').fill('90d');
  await create.getByRole('button', { name: 'Create' }).click();
  await create.waitFor({ state: 'detached' });

  const shown = page.getByRole('dialog', { name: 'Virtual key team-a created' });
  const first = await shown.getByLabel('Key of team-a').inputValue();
  expect(litellm.vkeys.issued).toEqual([first]);
  expect(litellm.vkeys.accepts(first)).toBe(true);
  expect(await shown.textContent()).toContain('shown this once');
  await shown.getByRole('button', { name: 'I have stored it' }).click();
  await shown.waitFor({ state: 'detached' });
  // Gone with its dialog.
  expect(await page.content()).not.toContain(first);
  const row = page.locator('tr[data-alias="team-a"]');
  expect(await row.textContent()).toContain('0.00 spent of 50.00 per 30d');
  expect(await row.textContent()).toContain(`sk-...${first.slice(-4)}`);
  expect(await row.textContent()).toContain('active');

  await page.getByRole('button', { name: 'Rotate team-a' }).click();
  const rotate = page.getByRole('dialog', { name: 'Rotate team-a' });
  expect(await rotate.getByLabel('Grace period').inputValue()).toBe('24h');
  await rotate.getByLabel('Grace period').fill('1h');
  await rotate.getByRole('button', { name: 'Rotate' }).click();
  const rotated = page.getByRole('dialog', { name: 'Virtual key team-a rotated' });
  const second = await rotated.getByLabel('Key of team-a').inputValue();
  expect(litellm.vkeys.issued).toEqual([first, second]);
  // The overlap: both work until the grace period ends.
  expect(litellm.vkeys.accepts(first) && litellm.vkeys.accepts(second)).toBe(true);
  expect(await rotated.textContent()).toContain('The old key stops working after 1h.');
  await rotated.getByRole('button', { name: 'I have stored it' }).click();
  await rotated.waitFor({ state: 'detached' });
  await until('the old key shows in its grace period', async () => new RegExp(`old key sk-\\.\\.\\.${first.slice(-4)} works until`).test((await row.textContent()) ?? ''));
  await page.screenshot({ path: path.join(ARTIFACTS, 'virtual-keys.png'), fullPage: true });

  await page.getByRole('button', { name: 'Delete team-a' }).click();
  const del = page.getByRole('dialog', { name: 'Delete team-a?' });
  expect(await del.textContent()).toContain('The virtual key team-a stops working at once.');
  await del.getByRole('button', { name: 'Delete team-a' }).click();
  await row.waitFor({ state: 'detached' });
  expect(litellm.vkeys.accepts(first) || litellm.vkeys.accepts(second)).toBe(false);
  await expectNoSecret(page);
});

it('a viewer signed in with a JWT sees what it may and no button that changes anything; the API refuses it anyway', async () => {
  const jwt = await new SignJWT({ role: 'viewer' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('oncall-viewer')
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(JWT_SECRET));
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const v = await ctx.newPage();
    v.setDefaultTimeout(10_000);
    watch(v);
    await v.goto(`${t.kp.url}/ui/`);
    await v.getByLabel('API token or JWT').fill(jwt);
    await v.getByRole('button', { name: 'Sign in' }).click();
    await v.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
    await v.locator('article[data-provider="openai"]').waitFor();
    expect(await v.locator('.who .actor').textContent()).toBe('jwt:oncall-viewer · viewer');
    expect(await v.getByRole('button', { name: 'Run health check now' }).count()).toBe(0);
    expect(await v.getByRole('navigation', { name: 'Pages' }).getByRole('link').allTextContents()).toEqual(['Overview', 'Keys', 'Virtual keys', 'Models and routing', 'Sync']);

    await go(v, 'Keys', 'Keys');
    await v.locator('tr[data-key="openrouter"]').waitFor();
    expect(await v.getByRole('button', { name: /^(Rotate|Disable|Enable|Delete) / }).count()).toBe(0);
    await v.getByRole('button', { name: 'Versions of openrouter' }).click();
    const versions = v.getByRole('dialog', { name: 'Versions of openrouter' });
    await versions.getByRole('table').waitFor();
    expect(await versions.getByRole('button', { name: /Roll .* back/ }).count()).toBe(0);
    await v.keyboard.press('Escape');
    await versions.waitFor({ state: 'detached' });
    await go(v, 'Sync', 'Sync');
    expect(await v.getByRole('button', { name: 'Sync now' }).count()).toBe(0);

    // A page the role may not see, asked for by its address: the API's refusal, as it wrote it.
    await v.goto(`${t.kp.url}/ui/#/audit`);
    const refused = v.getByRole('alert').first();
    await refused.waitFor();
    expect(await refused.textContent()).toContain('Forbidden');
    expect(await refused.textContent()).toContain('this needs the admin role; the caller has viewer');

    // And the API enforces the same whatever the page shows.
    const status = await v.evaluate(
      async (token) => (await fetch('/api/v1/admin/platform-keys/openrouter', { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ api_key: 'sk-or-viewer-attempt-000000001' }) })).status,
      jwt,
    );
    expect(status).toBe(403);
    await expectNoSecret(v);
  } finally {
    await ctx.close();
  }
});

it('works from the keyboard alone, and at phone width', async () => {
  // A reload keeps the session (this tab's storage).
  await page.goto(`${t.kp.url}/ui/#/overview`);
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  let onKeys = false;
  for (let i = 0; i < 10 && !onKeys; i++) {
    await page.keyboard.press('Tab');
    onKeys = await page.evaluate(() => document.activeElement?.textContent === 'Keys');
  }
  expect(onKeys).toBe(true);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { level: 1, name: 'Keys' }).waitFor();

  const rotate = page.getByRole('button', { name: 'Rotate oa-main' });
  await rotate.focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Rotate oa-main' });
  await dialog.waitFor();
  const input = dialog.getByLabel('New key for oa-main');
  expect(await page.evaluate(() => document.activeElement?.id)).toBe(await input.getAttribute('id'));
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  expect(await page.evaluate(() => document.activeElement?.getAttribute('aria-label'))).toBe('Rotate oa-main');

  await page.setViewportSize({ width: 390, height: 844 });
  try {
    for (const [link, file] of [['Overview', 'overview-phone.png'], ['Keys', 'keys-phone.png']] as const) {
      await go(page, link, link);
      await page.locator(link === 'Keys' ? 'tr[data-key="openrouter"]' : 'article[data-provider="openai"]').waitFor();
      // Nothing runs off the side: tables turn into labelled blocks.
      expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
      await page.screenshot({ path: path.join(ARTIFACTS, file), fullPage: true });
    }
    expect(await keyRow('openrouter').getByRole('button', { name: 'Rotate openrouter' }).isVisible()).toBe(true);
  } finally {
    await page.setViewportSize({ width: 1280, height: 900 });
  }
});

it('never asked for a decrypted key or another host, and the browser reported no error or policy violation', async () => {
  expect(requested.length).toBeGreaterThan(50);
  expect(requested.filter((u) => /decrypted/i.test(u))).toEqual([]);
  expect(requested.filter((u) => !u.startsWith(`${t.kp.url}/`))).toEqual([]);
  expect(problems).toEqual([]);
});
