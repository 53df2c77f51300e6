import { createServer, type Server } from 'node:http';
import path from 'node:path';
import type { Express } from 'express';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import type { Settings } from './config';
import { createLogger, SecretRegistry, type Logger } from './log';
import { createMetrics, type Metrics } from './metrics';
import { createPool, type Pool } from './db/pool';
import { migrate } from './db/migrator';
import { startEmbeddedPostgres } from './db/embedded';
import { resolveKeyring } from './crypto/master-key';
import type { Keyring } from './crypto/keyring';
import { assertKeyringCovers, loadFingerprinter } from './crypto/secret-tables';
import { Authenticator } from './http/auth';
import { RouteTable } from './http/route-table';
import { answerClientError, createApp, securityHeaders } from './http/app';
import { AuditStore } from './features/audit/audit-store';
import { registerAuditRoutes } from './features/audit/audit-routes';
import { TokensStore } from './features/tokens/tokens-store';
import { registerTokenRoutes } from './features/tokens/tokens-routes';
import { PlatformKeysService } from './features/platform-keys/platform-keys-service';
import { registerPlatformKeyRoutes } from './features/platform-keys/platform-keys-routes';
import { ProvidersService } from './features/providers/providers-service';
import { registerProviderRoutes } from './features/providers/providers-routes';
import { registerKeyPoolRoutes } from './features/key-pools/key-pools-routes';
import { KeyStatesService } from './features/key-pools/key-states';
import { RotationService } from './features/key-pools/rotation-service';
import { registerRotationRoutes } from './features/key-pools/rotation-routes';
import { RotationWorker, type RotationEvents } from './features/key-pools/rotation-worker';
import { KeysSummaryStore } from './features/key-pools/keys-summary-store';
import { registerKeysSummaryRoutes } from './features/key-pools/keys-summary-routes';
import { DestinationsService } from './features/destinations/destinations-service';
import { registerDestinationRoutes } from './features/destinations/destinations-routes';
import { ModelsService } from './features/models/models-service';
import { registerModelRoutes } from './features/models/models-routes';
import { registerRoutingRoutes } from './features/routing/routing-routes';
import { registerByokRoutes } from './features/byok/byok-routes';
import { LitellmAdmin } from './features/virtual-keys/litellm-admin';
import { VirtualKeysService } from './features/virtual-keys/virtual-keys-service';
import { VirtualKeyRotations } from './features/virtual-keys/virtual-key-rotations';
import { VirtualKeyWorker, type VirtualKeyEvents } from './features/virtual-keys/virtual-key-worker';
import { registerVirtualKeyRoutes } from './features/virtual-keys/virtual-keys-routes';
import { LitellmStateStore } from './litellm/litellm-state-store';
import { SafeEmitter } from './events';
import { LogAlerter, type Alerter } from './alerts/alerter';
import { WebhookAlerter } from './alerts/webhook';
import { ReloadQueue, type ReloadEvents } from './reload/reload-queue';
import { createReloader } from './reload/reloader-factory';
import { loadDesiredState } from './sync/desired-state';
import type { SyncEvents } from './sync/sync-events';
import { createSyncRuntime, type SyncRuntime } from './sync/sync-runtime';
import { renderOnce } from './sync/render-once';
import { loadBaseConfig } from './sync/base-config';
import { authOffOnPurpose } from './sync/renderer';
import { registerSyncRoutes } from './features/sync/sync-routes';
import { HealthStore } from './health/health-store';
import { createKeyValidator } from './health/key-validator';
import { Prober, type HealthEvents } from './health/prober';
import { KeyHealthStore } from './health/key-health-store';
import { registerKeyPoolMetrics } from './health/key-metrics';
import { KeyProber, type KeyProbeEvents } from './health/key-prober';
import { keyFinding } from './health/key-findings';
import { sendProbe } from './health/probes';
import { displayUrl } from './url';
import { registerHealthRoutes } from './features/health/health-routes';
import { LiveEvents } from './features/dashboard/live-events';
import { registerDashboardRoutes } from './features/dashboard/dashboard-routes';

export type KeyplaneEvents = SyncEvents & ReloadEvents & HealthEvents & KeyProbeEvents & RotationEvents & VirtualKeyEvents;

export const VERSION: string = (require('../package.json') as { version: string }).version;

export interface BuildOptions {
  /** Where log lines go (tests capture them); stdout/stderr by default. */
  logStream?: NodeJS.WritableStream;
  /**
   * false: only the store and services (CLI commands such as import and render): no HTTP listener,
   * no sync loop, no reloads, no prober; the embedded Postgres of a server running on the same data
   * dir is used beside it.
   */
  listen?: boolean;
  /** Where the built dashboard is (default: dist/ui of this package). */
  uiDir?: string;
}

/** dist/ui beside the compiled code, found the same from src/ (tests) and dist/ (the package). */
export const DEFAULT_UI_DIR = path.resolve(__dirname, '..', 'dist', 'ui');

/** The running keyplane: every part, and one stop() that tears them down in reverse order. */
export interface Keyplane {
  settings: Settings;
  log: Logger;
  secrets: SecretRegistry;
  metrics: Metrics;
  pool: Pool;
  keyring: Keyring;
  platformKeys: PlatformKeysService;
  keyStates: KeyStatesService;
  rotations: RotationService;
  providers: ProvidersService;
  models: ModelsService;
  tokens: TokensStore;
  audit: AuditStore;
  routes: RouteTable;
  events: SafeEmitter<KeyplaneEvents>;
  sync?: SyncRuntime;
  reloads?: ReloadQueue;
  prober?: Prober;
  /** Probes every pool key each round and rechecks the keys it disabled (only with the runtime). */
  keyProber?: KeyProber;
  /** Carries rotations on (acts only while this instance leads). */
  rotationWorker?: RotationWorker;
  /** LiteLLM's virtual keys, made and changed through its /key/* API. */
  virtualKeys: VirtualKeysService;
  virtualKeyRotations: VirtualKeyRotations;
  /** Deletes old virtual keys at their deadline (acts only while this instance leads). */
  virtualKeyWorker?: VirtualKeyWorker;
  health: HealthStore;
  /** The dashboard's event streams (only with the runtime). */
  live?: LiveEvents;
  server?: Server;
  app?: Express;
  /** `http://host:port` of the admin API when listening. */
  url?: string;
  /** Renders LiteLLM's files once (the `render` command); dry-run shows what would change. */
  renderOnce: (opts: { dryRun: boolean }) => Promise<unknown>;
  stop(): Promise<void>;
}

type Stopper = { name: string; stop: () => Promise<void> | void };

/**
 * Opens the database (embedded when no URL is set), migrates it and checks the keyring against it.
 * `share`: a command run beside a server uses that server's embedded Postgres.
 */
export async function openStore(settings: Settings, log: Logger, secrets: SecretRegistry, stoppers: Stopper[], opts: { share?: boolean } = {}): Promise<{ pool: Pool; keyring: Keyring; url: string }> {
  // A configured keyring is checked before Postgres starts; the development key is made only once the
  // embedded Postgres it belongs with has started (a start that fails leaves no key behind).
  const configured = Boolean(settings.masterKey || settings.masterKeyFile || settings.databaseUrl);
  const keyringOf = (): Keyring => resolveKeyring(settings, secrets, log.child({ component: 'keyring' }));
  const early = configured ? keyringOf() : undefined;
  let url = settings.databaseUrl;
  if (!url) {
    const db = await startEmbeddedPostgres(settings.dataDir, log.child({ component: 'postgres' }), { share: opts.share, runtimeDir: settings.embeddedPgDir });
    stoppers.push({ name: 'embedded-postgres', stop: db.stop });
    url = db.url;
  }
  const keyring = early ?? keyringOf();
  const pool = createPool(url, { max: 20, applicationName: `keyplane:${settings.instanceId}` });
  stoppers.push({ name: 'pool', stop: () => pool.end() });
  const applied = await migrate(pool);
  if (applied.length) log.info('migrations applied', { applied });
  await assertKeyringCovers(pool, keyring);
  return { pool, keyring, url };
}

export async function stopAll(stoppers: Stopper[], log: Logger): Promise<void> {
  for (const s of [...stoppers].reverse()) {
    try {
      await s.stop();
    } catch (err) {
      log.warn('stop failed', { part: s.name, err });
    }
  }
  stoppers.length = 0;
}

export async function createKeyplane(settings: Settings, opts: BuildOptions = {}): Promise<Keyplane> {
  const secrets = new SecretRegistry();
  for (const s of [settings.adminToken, settings.jwtSecret, settings.litellmMasterKey]) if (s) secrets.pin(s);
  const log = createLogger({ level: settings.logLevel, secrets, stream: opts.logStream });
  const stoppers: Stopper[] = [];
  try {
    const { pool, keyring, url } = await openStore(settings, log, secrets, stoppers, { share: opts.listen === false });
    const runtime = opts.listen !== false;
    const fingerprints = await loadFingerprinter(pool, keyring);
    const metrics = createMetrics();
    const events = new SafeEmitter<KeyplaneEvents>((err, event) => log.warn('event listener failed', { event, err }));
    const audit = new AuditStore(pool);
    const tokens = new TokensStore(pool);
    const health = new HealthStore(pool);
    const validator = createKeyValidator({ store: health, log: log.child({ component: 'key-validator' }), timeoutMs: settings.healthTimeoutMs, secrets });
    const baseConfigFile = settings.baseConfig;
    const platformKeys = new PlatformKeysService(pool, keyring, fingerprints, validator, {
      authOffOnPurpose: async () => (baseConfigFile ? authOffOnPurpose(await loadBaseConfig(baseConfigFile)) : false),
    });
    const destinations = new DestinationsService(pool);
    const providers = new ProvidersService(pool, destinations);
    const models = new ModelsService(pool, destinations, fingerprints);
    const loadState = () => loadDesiredState(pool, platformKeys);
    registerKeyGauge(metrics, pool);
    registerKeyPoolMetrics(metrics.registry, new KeyHealthStore(pool));

    const webhook = settings.alertWebhook
      ? new WebhookAlerter({ url: settings.alertWebhook, instance: settings.instanceId, log: log.child({ component: 'alerts' }), secrets })
      : undefined;
    if (webhook) stoppers.push({ name: 'alerts', stop: () => webhook.stop() });
    const alerter: Alerter = webhook ?? new LogAlerter(log.child({ component: 'alerts' }));
    const keyStates = new KeyStatesService(pool, alerter, log.child({ component: 'key-states' }), metrics.registry);

    let reloads: ReloadQueue | undefined;
    let sync: SyncRuntime | undefined;
    let prober: Prober | undefined;
    let keyProber: KeyProber | undefined;
    let rotationWorker: RotationWorker | undefined;
    let virtualKeyWorker: VirtualKeyWorker | undefined;
    const rotations = new RotationService({
      pool,
      platformKeys,
      destinations,
      // Judged as the key prober judges a key: refused, out of credit, or fine.
      probe: async (target) => keyFinding(await sendProbe(target, { timeoutMs: settings.healthTimeoutMs }), target.apiKey, new Date()),
      secrets,
      log: log.child({ component: 'rotation' }),
      nudge: () => rotationWorker?.nudge(),
    });
    const litellmAdmin = new LitellmAdmin({
      url: settings.litellmUrl,
      masterKey: settings.litellmMasterKey,
      pool,
      // The same record of the master key version LiteLLM accepts as the litellm-api reloader keeps.
      state: new LitellmStateStore(pool, (jwe, ref) => keyring.decrypt(jwe, ref)),
    });
    const virtualKeys = new VirtualKeysService({ pool, litellm: litellmAdmin, secrets, log: log.child({ component: 'virtual-keys' }) });
    const virtualKeyRotations = new VirtualKeyRotations({
      pool,
      keys: virtualKeys,
      litellm: litellmAdmin,
      fingerprint: (text) => fingerprints.of(text),
      secrets,
      log: log.child({ component: 'virtual-keys' }),
      nudge: () => virtualKeyWorker?.nudge(),
    });
    if (runtime) {
      // Only the leader reloads; one that lost the lead leaves the rest to the new leader.
      reloads = new ReloadQueue({ reloader: createReloader(settings, { log, secrets, pool, keyring }), pool, log, alerter, emitter: events, secrets, isLeader: () => sync?.leader.isLeader ?? true, registry: metrics.registry });
      const queue = reloads;
      stoppers.push({ name: 'reload-queue', stop: () => queue.stop() });
      sync = createSyncRuntime(settings, {
        pool,
        connectionString: url,
        loadState,
        log,
        secrets,
        events,
        reload: (req, wish) => queue.submit(req, wish),
        reloadStatus: () => queue.status(),
        registry: metrics.registry,
        digest: (text) => fingerprints.of(text),
      });
      const leader = sync.leader;
      keyProber = new KeyProber({
        pool,
        store: new KeyHealthStore(pool),
        states: keyStates,
        keys: platformKeys,
        log,
        // A key comes back after as many good probes as a provider needs to be healthy again.
        policy: { recoverPasses: settings.healthRecoverThreshold, recheck: settings.keyRecheck, creditAlert: settings.creditAlert },
        timeoutMs: settings.healthTimeoutMs,
        concurrency: settings.healthConcurrency,
        registry: metrics.registry,
        alerter,
        emitter: events,
        shouldRun: () => leader.isLeader,
      });
      prober = new Prober({ store: health, keys: platformKeys, log, settings, registry: metrics.registry, emitter: events, alerter, shouldRun: () => leader.isLeader, keyProber });
      rotationWorker = new RotationWorker({ pool, keyStates, loadState, events, isLeader: () => leader.isLeader, log: log.child({ component: 'rotation' }) });
      virtualKeyWorker = new VirtualKeyWorker({
        store: virtualKeys.store,
        keys: virtualKeys,
        litellm: litellmAdmin,
        rotations: virtualKeyRotations,
        alerter,
        events,
        isLeader: () => leader.isLeader,
        log: log.child({ component: 'virtual-keys' }),
      });
    }

    const routes = new RouteTable();
    registerPlatformKeyRoutes(routes, platformKeys);
    registerKeyPoolRoutes(routes, { states: keyStates, platformKeys });
    registerKeysSummaryRoutes(routes, new KeysSummaryStore(pool));
    registerDestinationRoutes(routes, destinations);
    // Before the providers' routes: /providers/health must not be taken for /providers/:slug.
    if (prober) registerHealthRoutes(routes, { store: health, prober, litellmUrl: displayUrl(settings.litellmUrl) });
    registerProviderRoutes(routes, providers);
    registerRotationRoutes(routes, rotations);
    registerModelRoutes(routes, models);
    registerRoutingRoutes(routes, pool);
    if (sync) {
      const leader = sync.leader;
      registerSyncRoutes(routes, { syncer: sync.syncer, pool, isLeader: () => leader.isLeader });
    }
    registerAuditRoutes(routes, audit);
    registerTokenRoutes(routes, tokens);
    registerByokRoutes(routes, { pool, keyring, fingerprints });
    registerVirtualKeyRoutes(routes, { keys: virtualKeys, rotations: virtualKeyRotations });
    // Nudges for the dashboard; only a listening server has streams to feed.
    const leaderOf = sync?.leader;
    const live = runtime ? new LiveEvents({ events, isLeader: () => leaderOf?.isLeader ?? true }) : undefined;
    registerDashboardRoutes(routes, { live });

    const auth = new Authenticator({
      adminToken: settings.adminToken,
      jwtSecret: settings.jwtSecret,
      jwksUrl: settings.jwksUrl,
      jwtIssuer: settings.jwtIssuer,
      jwtAudience: settings.jwtAudience,
      tokens,
      maxFailures: settings.authMaxFailures,
    });
    if (runtime && !settings.adminToken) log.warn('KEYPLANE_ADMIN_TOKEN is not set: only tokens made with `keyplane token create` and JWTs are accepted');

    const kp: Keyplane = {
      settings, log, secrets, metrics, pool, keyring, platformKeys, keyStates, rotations, providers, models, tokens, audit, routes, events, sync, reloads, prober, keyProber, rotationWorker, virtualKeys, virtualKeyRotations, virtualKeyWorker, health, live,
      renderOnce: (o) => renderOnce({ pool, loadState, log, secrets, settings, digest: (text) => fingerprints.of(text) }, o),
      stop: async () => {
        const started = Date.now();
        log.info('stopping');
        await stopAll(stoppers, log);
        log.info('stopped', { ms: Date.now() - started });
      },
    };

    if (opts.listen !== false) {
      const app = createApp({ log: log.child({ component: 'http' }), metrics, pool, auth, routes, version: VERSION, trustedProxies: settings.trustedProxies, uiDir: opts.uiDir ?? DEFAULT_UI_DIR });
      const server = createServer(app);
      server.keepAliveTimeout = 65_000;
      const headers = securityHeaders();
      server.on('clientError', (err: Error & { code?: string }, socket) => answerClientError(err, socket, headers));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(settings.listen.port, settings.listen.host, () => resolve());
      });
      stoppers.push({
        name: 'http',
        stop: async () => {
          await new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeIdleConnections();
            setTimeout(() => server.closeAllConnections(), 5_000).unref();
          });
          await routes.drain();
        },
      });
      // Before the server closes: open streams would otherwise hold it until its 5 s deadline.
      if (live) stoppers.push({ name: 'live-events', stop: () => live.stop() });
      const addr = server.address() as AddressInfo;
      kp.server = server;
      kp.app = app;
      kp.url = `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
      log.info('admin API listening', { url: kp.url, version: VERSION });
    }
    if (sync && prober && keyProber) {
      // Sync starts after the API listens (a first render can take a moment) and stops before it.
      const s = sync;
      const p = prober;
      const k = keyProber;
      stoppers.push({ name: 'sync', stop: () => s.stop() });
      await s.start();
      // Keys a probe disabled come back on their own even with scheduled rounds off (a manual round may have disabled them).
      k.start();
      const offNudge = events.on('watcher:notification', (n) => {
        if (n.table === 'platform_key_versions') k.nudge();
      });
      stoppers.push({
        name: 'key-prober',
        stop: () => {
          offNudge();
          return k.stop();
        },
      });
      if (settings.healthSchedule !== 'off') p.start();
      stoppers.push({ name: 'prober', stop: () => p.stop() });
      // After the sync: it acts on what the renders and reloads record, and stops before them.
      const w = rotationWorker;
      if (w) {
        w.start();
        stoppers.push({ name: 'rotations', stop: () => w.stop() });
      }
      const v = virtualKeyWorker;
      if (v) {
        v.start();
        stoppers.push({ name: 'virtual-keys', stop: () => v.stop() });
      }
    }
    return kp;
  } catch (err) {
    await stopAll(stoppers, log);
    throw err;
  }
}

/** keyplane_keys{state}: active, expiring (< 14 days), expired; read from the database at scrape time. */
function registerKeyGauge(metrics: Metrics, pool: Pool): void {
  new client.Gauge({
    name: 'keyplane_keys',
    help: 'Platform keys by state (active, expiring within 14 days, expired)',
    labelNames: ['state'],
    registers: [metrics.registry],
    async collect() {
      const { rows } = await pool.query<{ state: string; n: number }>(
        `SELECT CASE WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'
                     WHEN expires_at IS NOT NULL AND expires_at <= now() + interval '14 days' THEN 'expiring'
                     ELSE 'active' END AS state, count(*)::int AS n
         FROM platform_keys GROUP BY 1`,
      );
      this.reset();
      for (const state of ['active', 'expiring', 'expired']) this.set({ state }, rows.find((r) => r.state === state)?.n ?? 0);
    },
  });
}
