"""pumer-export: take a finetuned PuMer vision-language model to deployment."""

__version__ = "0.1.0"
