import { maskConfigText, maskTokens, maskUrlPasswords } from '../src/sync/masking';
import { SYNC_TASKS } from '../src/sync/sync-tasks';
import { CONFIG_FILE, ENV_FILE } from '../src/sync/writer';

const SECRET = 'sk-proj-1234567890abcdef';

describe('masking what a viewer sees of the rendered files', () => {
  it('masks a URL password, and only that', () => {
    expect(maskUrlPasswords('postgres://u:hunter22@db/x')).toBe('postgres://u:****@db/x');
    expect(maskUrlPasswords('a https://u:p:q@h/ b redis://:only@h c')).toBe('a https://u:****@h/ b redis://:only@h c');
    expect(maskUrlPasswords('HTTPS://User:Pw@h and s3+v2.x://k:s@b')).toBe('HTTPS://User:****@h and s3+v2.x://k:****@b');
    for (const plain of ['https://h/path', 'https://u@h', 'https://u:p/h@x', '://u:p@h', '123://u:p@h', 'x://u:p h@', `${'a'.repeat(5000)}://`, '://'.repeat(3000)]) {
      expect(maskUrlPasswords(plain)).toBe(plain);
    }
  });

  it('masks whole tokens equal to a secret, never a secret inside a longer token (no oracle on parts of a key)', () => {
    const secrets = new Set([SECRET]);
    expect(maskTokens(`key ${SECRET} and "${SECRET}"`, secrets)).toBe('key **** and "****"');
    // An operator's guess inside a URL or a longer word is shown as written, whatever it holds.
    for (const text of [`https://x.example/${SECRET}`, `https://x.example/${SECRET.slice(0, 12)}`, `${SECRET}x`, `x${SECRET}`, SECRET.slice(1)]) {
      expect(maskTokens(text, secrets)).toBe(text);
    }
  });

  it('config.yaml: secret-named values that are not references, URL passwords, whole known values', () => {
    const text = [
      'general_settings:',
      '  master_key: sk-literal-master-1',
      '  "database_url": postgres://u:hunter22@db/x',
      '  "odd\\"key": plain',
      '  other_key: os.environ/OTHER_KEY',
      'model_list:',
      '  - api_key: "quoted-secret-1"',
      `    note: mentions ${SECRET}`,
      `    api_base: https://guess.example/${SECRET}`,
      '    password:',
      '    # api_key: comment',
      '',
    ].join('\n');
    expect(maskConfigText(text, [SECRET])).toBe(
      [
        'general_settings:',
        '  master_key: "****"',
        '  "database_url": postgres://u:****@db/x',
        '  "odd\\"key": plain',
        '  other_key: os.environ/OTHER_KEY',
        'model_list:',
        '  - api_key: "****"',
        '    note: mentions ****',
        `    api_base: https://guess.example/${SECRET}`,
        '    password:',
        '    # api_key: comment',
        '',
      ].join('\n'),
    );
  });

  it('the preview task shows a guess the same whether or not it is part of a key', () => {
    const env = `# header\nOPENAI_API_KEY=${SECRET}\n`;
    const preview = (guess: string) =>
      SYNC_TASKS.preview({
        wanted: { [CONFIG_FILE]: `model_list:\n  - litellm_params:\n      api_base: https://x.example/${guess}\n`, [ENV_FILE]: env },
        onDisk: { [CONFIG_FILE]: '', [ENV_FILE]: env },
        secrets: [SECRET],
      });
    const right = preview(SECRET.slice(0, 16));
    const wrong = preview('sk-proj-zzzzzzzz');
    expect(right.config).toContain(`api_base: https://x.example/${SECRET.slice(0, 16)}`);
    expect(wrong.config).toContain('api_base: https://x.example/sk-proj-zzzzzzzz');
    expect(preview(SECRET).config).toContain(`api_base: https://x.example/${SECRET}`);
    expect(right.env).toBe(`# header\nOPENAI_API_KEY=****${SECRET.slice(-4)}\n`);
    expect(right.changed).toEqual({ [CONFIG_FILE]: true, [ENV_FILE]: false });
  });
});
