/** How LiteLLM's proxy answers, shared by the fake's parts (see fake-litellm.ts). */

export class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {}
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A raised ProxyException as LiteLLM's exception handler renders it. */
export function proxyError(status: number, message: string, type: string, param: string | null = 'None'): Reply {
  return new Reply(status, { error: { message, type, param, code: String(status) } });
}

/** A ProxyException *returned* from a handler: FastAPI serialises its attributes with status 200. */
export function returnedProxyError(code: number, message: string): Reply {
  return new Reply(200, { message, type: 'internal_server_error', param: 'None', openai_code: code, code: String(code), headers: {} });
}

/** FastAPI's request validation error (422) for missing body fields. */
export function validationError(fields: string[], where = 'body'): Reply {
  return new Reply(422, { detail: fields.map((f) => ({ type: 'missing', loc: [where, f], msg: 'Field required' })) });
}

/** How Python prints `{"error": text}`, which is what LiteLLM puts in a message built from an HTTPException detail. */
export function pyDict(text: string): string {
  const quoted = text.includes("'") && !text.includes('"') ? `"${text}"` : `'${text.replace(/'/g, "\\'")}'`;
  return `{'error': ${quoted}}`;
}

export const DB_NOT_CONNECTED = 'DB not connected. See https://docs.litellm.ai/docs/proxy/virtual_keys';
