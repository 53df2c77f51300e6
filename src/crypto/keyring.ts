import { randomBytes, createHmac, timingSafeEqual, createHash } from 'node:crypto';
import { FlattenedEncrypt, flattenedDecrypt, decodeProtectedHeader, base64url } from 'jose';
import type { SecretRegistry } from '../log';

/** A flattened JWE without its `aad` member: the row reference is supplied again at decrypt time. */
export interface StoredJwe {
  protected: string;
  iv: string;
  ciphertext: string;
  tag: string;
}

export interface MasterKey {
  id: string;
  key: Uint8Array;
}

export class MissingMasterKeyError extends Error {
  constructor(readonly kids: string[], hint?: string) {
    super(`stored secrets are encrypted under master key id(s) ${kids.join(', ')}, which the configured keyring does not have${hint ? `: ${hint}` : ''}`);
    this.name = 'MissingMasterKeyError';
  }
}

/** One secret that does not decrypt with the key of its id (found at start-up: WrongMasterKeyError). */
export class DecryptionError extends Error {
  constructor(readonly ref: string, readonly kid: string) {
    super(`secret ${ref} does not decrypt with master key ${kid}: the key differs from the one it was encrypted with, or the stored value was changed`);
    this.name = 'DecryptionError';
  }
}

/** Start-up: a configured key has the id of the stored secrets' key but other bytes (a regenerated or mistyped key). */
export class WrongMasterKeyError extends Error {
  constructor(readonly kids: string[], source: string) {
    super(
      `this master key does not decrypt the stored secrets: master key id(s) ${kids.join(', ')} from ${source} ` +
        `are not the key(s) the secrets were encrypted with under that id; configure the original key file`,
    );
    this.name = 'WrongMasterKeyError';
  }
}

/** Where a keyring came from, for messages: the setting or file, and whether it is the generated development key. */
export interface KeyringOrigin {
  source: string;
  dev: boolean;
  /** The development key's file (it exists once keyplane ran without a master key configured). */
  devKeyFile?: string;
}

const KEY_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Master keys by id. The first encrypts; all decrypt. Each secret is a JWE (`dir` + `A256GCM`,
 * `kid` = master key id) whose additional authenticated data is the reference of the row that
 * holds it, so a ciphertext copied onto another row fails to decrypt.
 */
export class Keyring {
  private readonly byId: Map<string, Uint8Array>;

  constructor(
    readonly keys: MasterKey[],
    private readonly secrets: SecretRegistry,
    readonly origin: KeyringOrigin = { source: 'KEYPLANE_MASTER_KEY', dev: false },
  ) {
    if (keys.length === 0) throw new Error('a keyring needs at least one master key');
    this.byId = new Map(keys.map((k) => [k.id, k.key]));
  }

  /** Parses `id:base64[,id:base64...]`; errors name `setting` and never echo a key. */
  static parse(spec: string, secrets: SecretRegistry, setting = 'KEYPLANE_MASTER_KEY', origin?: KeyringOrigin): Keyring {
    const keys: MasterKey[] = [];
    for (const [i, part] of spec.split(',').map((s) => s.trim()).filter(Boolean).entries()) {
      const at = part.indexOf(':');
      const id = at > 0 ? part.slice(0, at) : '';
      if (!KEY_ID.test(id)) throw new Error(`${setting}: entry ${i + 1} must be id:base64key with an id of letters, digits, _ . -`);
      const key = Buffer.from(part.slice(at + 1), 'base64');
      if (key.length !== 32) throw new Error(`${setting}: key "${id}" must be 32 bytes of base64 (got ${key.length} bytes)`);
      if (keys.some((k) => k.id === id)) throw new Error(`${setting}: key id "${id}" appears twice`);
      keys.push({ id, key: new Uint8Array(key) });
    }
    if (keys.length === 0) throw new Error(`${setting}: no key given`);
    return new Keyring(keys, secrets, origin ?? { source: setting, dev: false });
  }

  /** A new `id:base64` entry for KEYPLANE_MASTER_KEY. */
  static generateSpec(id = `k${new Date().toISOString().slice(0, 10).replace(/-/g, '')}${randomBytes(2).toString('hex')}`): string {
    return `${id}:${randomBytes(32).toString('base64')}`;
  }

  get primaryId(): string {
    return this.keys[0]!.id;
  }

  has(kid: string): boolean {
    return this.byId.has(kid);
  }

  /** A short non-secret label for the keyring, for logs and doctor. */
  describe(): string[] {
    return this.keys.map((k) => `${k.id} (sha256:${createHash('sha256').update(k.key).digest('hex').slice(0, 8)})`);
  }

  async encrypt(plaintext: string, ref: string): Promise<{ jwe: StoredJwe; kid: string }> {
    this.secrets.add(plaintext);
    const kid = this.primaryId;
    const jwe = await new FlattenedEncrypt(enc.encode(plaintext))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid })
      .setAdditionalAuthenticatedData(enc.encode(ref))
      .encrypt(this.byId.get(kid)!);
    return { jwe: { protected: jwe.protected!, iv: jwe.iv!, ciphertext: jwe.ciphertext, tag: jwe.tag! }, kid };
  }

  kidOf(jwe: StoredJwe): string {
    const header = decodeProtectedHeader({ protected: jwe.protected, iv: jwe.iv, ciphertext: jwe.ciphertext, tag: jwe.tag });
    return String(header.kid ?? '');
  }

  async decrypt(jwe: StoredJwe, ref: string): Promise<string> {
    const kid = this.kidOf(jwe);
    const key = this.byId.get(kid);
    if (!key) throw new MissingMasterKeyError([kid]);
    try {
      const { plaintext } = await flattenedDecrypt({ ...jwe, aad: base64url.encode(ref) }, key);
      const value = dec.decode(plaintext);
      this.secrets.add(value);
      return value;
    } catch {
      throw new DecryptionError(ref, kid);
    }
  }
}

/** HMAC-SHA256 fingerprints: stable for a value, and useless to anyone without the fingerprint key. */
export class Fingerprinter {
  constructor(private readonly key: Uint8Array) {}

  of(value: string): string {
    return 'hmac-sha256:' + createHmac('sha256', this.key).update(value).digest('hex').slice(0, 32);
  }
}

/** Compares two strings in time that does not depend on where they differ. */
export function constantTimeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}

export function last4(value: string): string {
  return value.length >= 12 ? value.slice(-4) : '';
}

export function maskKey(l4: string): string {
  return l4 ? `****${l4}` : '****';
}
