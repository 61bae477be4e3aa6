"""Building blocks of the LMP model: embeddings, masking, contextual and cross-modal transformers, and
the loss groups of its forward (`LossTerms`)."""

from lmp_model.modules.embedding import ModalityEmbedding
from lmp_model.modules.masking import sample_replacement, sample_token_mask
from lmp_model.modules.terms import VALID_KEY, LossTerms
from lmp_model.modules.transformer import ContextualEncoder, CrossModalTransformer, attention_mask

__all__ = [
    "ContextualEncoder",
    "CrossModalTransformer",
    "LossTerms",
    "ModalityEmbedding",
    "VALID_KEY",
    "attention_mask",
    "sample_replacement",
    "sample_token_mask",
]
