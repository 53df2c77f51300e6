import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startTestApp, type TestApp } from './helpers/app';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { until } from './helpers/wait';

/**
 * Issue 13: the dashboard end to end, in Debian's Chromium driven by playwright-core, against the
 * whole keyplane (real Postgres, sync, reloads, prober) and a fake provider that can start refusing
 * a key. The steps run in order on one signed-in page, as an on-call admin would go through them.
 */

jest.setTimeout(60_000);

const ARTIFACTS = path.join(__dirname, '..', 'test-artifacts', 'ui');
const CHROMIUM = '/usr/bin/chromium';
const OR_V1 = 'sk-or-v1-e2e-first-value-0001';
const OR_V2 = 'sk-or-v1-e2e-second-value-0002';
const OR_BAD = 'sk-or-v1-e2e-refused-value-0003';
const OA_MAIN = 'sk-oa-e2e-main-value-0004';
const OA_SPARE = 'sk-oa-e2e-spare-value-0005';
const SECRETS = [OR_V1, OR_V2, OR_BAD, OA_MAIN, OA_SPARE];
const JWT_SECRET = 'e2e-jwt-secret-that-is-long-enough-for-hs256';
const XSS = '<img src=x onerror="window.__xss=1">leaked?';

let fake: FakeProvider;
let t: TestApp;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const problems: string[] = [];
const requested: string[] = [];

function watch(p: Page): void {
  p.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
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

async function healthRound(): Promise<void> {
  await t.api().post('/api/v1/admin/llm/health/check').expect(200);
}

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  fake = await startFakeProvider();
  t = await startTestApp({
    env: {
      KEYPLANE_RELOAD: 'command',
      KEYPLANE_RELOAD_COMMAND: 'true',
      KEYPLANE_LITELLM_URL: fake.base('litellm'),
      KEYPLANE_HEALTH_FAIL_THRESHOLD: '1',
      KEYPLANE_HEALTH_RECOVER_THRESHOLD: '1',
      KEYPLANE_JWT_SECRET: JWT_SECRET,
    },
  });
  const api = t.api;
  for (const [name, value] of [['openrouter', OR_V1], ['oa-main', OA_MAIN], ['oa-spare', OA_SPARE]] as const) {
    await api().put(`/api/v1/admin/platform-keys/${name}`).send({ api_key: value }).expect(200);
  }
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
  watch(page);
});

afterAll(async () => {
  await browser?.close();
  await t?.close();
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
