/**
 * The provider prefixes LiteLLM routes a `model: <prefix>/<id>` by (its `LlmProviders`, LiteLLM
 * 1.81). A prefix outside this list is a typo more often than a provider, and LiteLLM would refuse
 * the deployment at start; the import reports it instead of storing it.
 */
export const LITELLM_PROVIDERS: ReadonlySet<string> = new Set([
  'openai', 'openai_like', 'chatgpt', 'custom_openai', 'text-completion-openai', 'aiohttp_openai', 'azure', 'azure_text', 'azure_ai',
  'anthropic', 'anthropic_text', 'bedrock', 'sagemaker', 'sagemaker_chat', 'sagemaker_nova', 'vertex_ai', 'vertex_ai_beta', 'gemini', 'palm',
  'cohere', 'cohere_chat', 'mistral', 'codestral', 'text-completion-codestral', 'groq', 'openrouter', 'together_ai', 'fireworks_ai',
  'deepseek', 'xai', 'zai', 'perplexity', 'deepinfra', 'cerebras', 'sambanova', 'nvidia_nim', 'ai21', 'ai21_chat', 'huggingface',
  'replicate', 'ollama', 'ollama_chat', 'vllm', 'hosted_vllm', 'lm_studio', 'llamafile', 'litellm_proxy', 'custom', 'databricks',
  'watsonx', 'watsonx_text', 'cloudflare', 'clarifai', 'baseten', 'nlp_cloud', 'petals', 'oobabooga', 'predibase', 'triton',
  'friendliai', 'featherless_ai', 'github', 'github_copilot', 'voyage', 'jina_ai', 'infinity', 'xinference', 'dashscope', 'moonshot',
  'volcengine', 'maritalk', 'nebius', 'novita', 'nscale', 'hyperbolic', 'lambda_ai', 'galadriel', 'empower', 'snowflake', 'oci',
  'meta_llama', 'datarobot', 'bytez', 'heroku', 'aiml', 'cometapi', 'gradient_ai', 'docker_model_runner', 'vercel_ai_gateway', 'wandb',
  'ovhcloud', 'lemonade', 'morph', 'v0', 'compactifai', 'recraft', 'fal_ai', 'deepgram', 'elevenlabs', 'assemblyai', 'runwayml',
  'black_forest_labs', 'topaz', 'aws_polly',
]);

// LiteLLM reads a provider's key from its environment when a deployment names none: `<KIND>_API_KEY`,
// and for a few kinds other names too.
const OTHER_KEY_VARS: Readonly<Record<string, string[]>> = {
  together_ai: ['TOGETHERAI_API_KEY', 'TOGETHER_API_KEY'],
  fireworks_ai: ['FIREWORKS_API_KEY'],
  perplexity: ['PERPLEXITYAI_API_KEY'],
  azure: ['AZURE_OPENAI_API_KEY'],
};

/** The env vars LiteLLM takes a `kind` deployment's key from when it names none, in LiteLLM's order. */
export function defaultKeyVars(kind: string): string[] {
  return [`${kind.toUpperCase().replace(/-/g, '_')}_API_KEY`, ...(OTHER_KEY_VARS[kind] ?? [])];
}
