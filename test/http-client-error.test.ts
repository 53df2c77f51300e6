import { connect } from 'node:net';
import { startTestApp, type TestApp } from './helpers/app';

/** Requests Node's HTTP parser refuses never reach Express; they still get problem+json and the security headers. */
describe('requests Node cannot parse', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  const raw = (text: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const { port } = new URL(t.kp.url!);
      const socket = connect(Number(port), '127.0.0.1', () => socket.end(text));
      let out = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (out += d));
      socket.on('close', () => resolve(out));
      socket.on('error', reject);
    });

  const parse = (answer: string) => {
    const [head, body] = answer.split('\r\n\r\n') as [string, string];
    const [statusLine, ...lines] = head.split('\r\n');
    const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    return { statusLine, headers, body: JSON.parse(body) as Record<string, unknown> };
  };

  it('a malformed request line: 400 problem+json with the security headers', async () => {
    const r = parse(await raw('NOT HTTP AT ALL\r\n\r\n'));
    expect(r.statusLine).toBe('HTTP/1.1 400 Bad Request');
    expect(r.headers['content-type']).toBe('application/problem+json');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['content-security-policy']).toContain("default-src 'none'");
    expect(r.headers['x-frame-options']).toBe('DENY');
    expect(r.body).toMatchObject({ status: 400, type: expect.stringMatching(/malformed-request$/) });
  });

  it('headers over the limit: 431 problem+json', async () => {
    const r = parse(await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    expect(r.statusLine).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(r.body).toMatchObject({ status: 431 });
    expect(r.headers['strict-transport-security']).toBeDefined();
  });
});
