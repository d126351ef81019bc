"""Drop-in integrations of the mxmoe kernels into model libraries.

`mxmoe.integrations.transformers` patches Hugging Face transformers GPT-OSS and DeepSeek-V3 models
(install the optional dependency: `pip install mxmoe[guardrail]`). Nothing here is imported by the
runtime, so `import mxmoe` never pulls in transformers.
"""
