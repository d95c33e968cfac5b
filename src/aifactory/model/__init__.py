"""The language model: a decoder-only transformer that maps one-to-one onto Hugging Face Llama.

config.py   ModelConfig, the MODEL_SIZE presets and the settings that override them (no torch)
llama.py    the network itself (RMSNorm, half-split RoPE, GQA attention via SDPA, SwiGLU), KV cache
hf.py       our state dict <-> transformers' LlamaForCausalLM names and config.json

Nothing is imported here, so `aifactory.model.config` can be used without importing torch.
"""
