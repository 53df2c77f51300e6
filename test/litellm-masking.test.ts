import { LitellmClient } from '../src/litellm/client';
import { isMaskedParam, maskCredentialValues, maskModelParams } from '../src/litellm/masking';
import { FakeLitellm } from './helpers/fake-litellm';

const MASTER = 'sk-master-masking-test-0001';

describe('LiteLLM masking, as keyplane predicts it', () => {
  it('masks credential values like _get_masked_values', () => {
    // LiteLLM's own test: vertex_credentials "{sensitive_api_key}" -> "{s****y}", api_base and None untouched.
    expect(maskCredentialValues({ vertex_credentials: '{sensitive_api_key}', api_base: 'sensitive_api_base', presidio_anonymizer_api_base: null, payload: true })).toEqual({
      vertex_credentials: '{s****y}',
      api_base: 'sensitive_api_base',
      presidio_anonymizer_api_base: null,
      payload: true,
    });
    // "Contains" a sensitive word: monkey_business would not be, but api_key, Authorization, aws_session_token are.
    expect(maskCredentialValues({ api_key: 'abcd', Authorization: 'Bearer xyz123', aws_session_token: 'tok-1234567', nested_secret: { api_key: 'sk-0123456789', region: 'eu' } })).toEqual({
      api_key: '*****',
      Authorization: 'Be****23',
      aws_session_token: 'to****67',
      nested_secret: { api_key: 'sk****89', region: 'eu' },
    });
  });

  it('masks model params like remove_sensitive_info_from_deployment + SensitiveDataMasker', () => {
    expect(isMaskedParam('api_key')).toBe(true);
    expect(isMaskedParam('max_tokens')).toBe(false);
    expect(isMaskedParam('input_cost_per_token')).toBe(false);
    expect(isMaskedParam('litellm_credential_name')).toBe(true);
    expect(isMaskedParam('aws-access-token')).toBe(true);
    expect(
      maskModelParams({
        api_key: 'sk-never-shown-0123456789',
        aws_secret_access_key: 'never-shown-either',
        model: 'openai/gpt-4o-mini',
        api_base: 'https://api.openai.com/v1',
        litellm_credential_name: 'keyplane-openai',
        auth_token: 'short',
        rpm: 100,
        extra_headers: { Authorization: 'Bearer 0123456789abcdef', 'X-Team': 'core' },
        tags: ['a', 'b'],
        access_groups: ['group-one-long-name', 'g2'],
        unset: null,
      }),
    ).toEqual({
      model: 'openai/gpt-4o-mini',
      api_base: 'https://api.openai.com/v1',
      litellm_credential_name: 'keyp*******enai',
      auth_token: '*****',
      rpm: 100,
      extra_headers: { Authorization: 'Bear' + '*'.repeat(15) + 'cdef', 'X-Team': 'core' },
      tags: ['a', 'b'],
      access_groups: ['grou***********name', '**'],
      unset: 'None',
    });
  });
});

describe('the fake LiteLLM and keyplane mask alike', () => {
  let fake: FakeLitellm;
  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: MASTER });
  });
  afterAll(async () => {
    await fake.stop();
  });

  it('GET /credentials and GET /model/info show exactly what keyplane predicts', async () => {
    const client = new LitellmClient({ url: fake.url, masterKey: MASTER });
    const values = { api_key: 'sk-abcdefghijklmnop', api_base: 'https://example.test/v1', api_version: '2024-06-01', client_secret: 'xy', private: { key: 'k-123456' } };
    await client.createCredential({ credential_name: 'c1', credential_values: values as unknown as Record<string, string>, credential_info: {} });
    const params = {
      model: 'openai/x',
      litellm_credential_name: 'c1',
      api_base: 'https://example.test/v1',
      vertex_credentials: 'os.environ/VERTEX',
      access_token: 'abc',
      max_tokens: 12,
      input_cost_per_token: 0.5,
      headers: { 'x-api-key': 'key-0123456789', accept: 'json' },
      secret_list: ['first-secret-value', 'x'],
      flag: true,
    };
    await client.createModel({ model_name: 'm1', litellm_params: params, model_info: { id: 'm1' } });
    const [cred] = (await client.listCredentials()).filter((c) => c.credential_name === 'c1');
    expect(cred!.credential_values).toEqual(maskCredentialValues(values));
    const [m] = (await client.listModels()).filter((x) => x.model_info.id === 'm1');
    // LiteLLM_Params' own defaults come on top.
    expect(m!.litellm_params).toEqual({ use_in_pass_through: false, use_litellm_proxy: false, merge_reasoning_content_in_choices: false, ...maskModelParams(params) });
  });
});
