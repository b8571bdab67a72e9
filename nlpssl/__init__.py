"""nlpssl: self-supervised pretraining of language models on Hugging Face parts."""

__version__ = "0.1.0"
