"""mlxk2: manage and run Hugging Face models with Apple MLX."""

__version__ = "2.0.0"
JSON_API_SPEC_VERSION = "0.1.7"
