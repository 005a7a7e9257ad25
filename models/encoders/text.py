"""Notes encoder: a BERT built from BertConfig (no pretrained weights; `arch: bert`) or a recurrent bag of words
(`arch: gru`), and a WordPiece tokenizer trained on the corpus with `tokenizers`, wrapped as a PreTrainedTokenizerFast.
Both save and load from a local folder, offline.

Why the GRU: what a clinical note says is which symptoms it reports and which it denies ("denies cough or chest
pain"); a forward GRU over token embeddings carries the negation scope along a sentence, and mean + max pooling over
its outputs is a bag of (negation-aware) words. It trains from a few hundred notes where a BERT from scratch does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from models.layers import freeze

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] gets id 0


@dataclass
class TextEncoderConfig:
    vocab_size: int = 512
    width: int = 32
    layers: int = 1
    heads: int = 2
    intermediate: int = 64
    max_length: int = 64
    pad_token_id: int = 0
    dropout: float = 0.0
    arch: str = "bert"  # "bert": tokens per word piece | "gru": 2 tokens (mean- and max-pooled GRU states)


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        if c.arch == "gru":
            self.embed = nn.Embedding(c.vocab_size, c.width, padding_idx=c.pad_token_id)
            self.drop = nn.Dropout(c.dropout)
            self.gru = nn.GRU(c.width, c.width, batch_first=True)
            self.out = nn.Linear(2 * c.width, c.width)
            self.kind = nn.Parameter(torch.zeros(2, c.width))  # which pooling a token comes from
            nn.init.normal_(self.kind, std=0.02)
            return
        bert = BertConfig(vocab_size=c.vocab_size, hidden_size=c.width, num_hidden_layers=c.layers,
                          num_attention_heads=c.heads, intermediate_size=c.intermediate,
                          max_position_embeddings=c.max_length, pad_token_id=c.pad_token_id,
                          hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)
        self.bert = BertModel(bert, add_pooling_layer=False)

    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) int64 token ids, [PAD]-padded -> tokens (B, T, D), mask (B, T) True where not [PAD]."""
        ids = ids[:, : self.config.max_length].long()
        mask = ids != self.config.pad_token_id
        if self.config.arch == "gru":
            return self._encode_gru(ids.clamp(0, self.config.vocab_size - 1), mask)
        tokens = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, T, D)
        return tokens, mask

    def _encode_gru(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids, (B, T) mask -> tokens (B, 2, D): mean and max over the note's words; mask (B, 2)."""
        e = self.drop(self.embed(ids))  # (B, T, D)
        h, _ = self.gru(e)  # (B, T, D): padding sits after the words, so it never feeds a word's state
        h = self.out(torch.cat([e, h], -1))  # (B, T, D)
        keep = mask.unsqueeze(-1)
        mean = torch.where(keep, h, torch.zeros_like(h)).sum(1) / keep.sum(1).clamp(min=1)
        big = torch.where(keep, h, torch.full_like(h, -1e4)).max(1).values
        big = torch.where(keep.any(1), big, torch.zeros_like(big))
        tokens = torch.stack([mean, big], 1) + self.kind  # (B, 2, D)
        return tokens, mask.any(1, keepdim=True).expand(-1, 2)

    def lock(self) -> None:
        freeze(self)

    def save(self, path: str | Path) -> None:
        self.bert.save_pretrained(path)

    @classmethod
    def load(cls, path: str | Path, config: TextEncoderConfig) -> TextEncoder:
        enc = cls(config)
        enc.bert = BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
        return enc


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, max_length: int = 64) -> PreTrainedTokenizerFast:
    """Train a lower-cased WordPiece tokenizer on `texts`; [PAD]=0, [CLS] ... [SEP] around each note.

    Deterministic: the same texts give the same vocabulary in every process and on every machine, so the nodes of a
    multi-node run and a resumed run tokenize alike. tokenizers' trainer (0.23) numbers the continuing-subword
    pieces (`##x`) in hash-map order and those numbers break ties between equally frequent merges
    (huggingface/tokenizers#1794): 30 trainings on one corpus gave 30 vocabularies. Naming every `##x` up front, in
    sorted order, fixes their numbers; the trained vocabulary is then rebuilt with them as ordinary pieces.
    """
    texts = [t for t in texts if t]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pieces = [f"##{c}" for c in sorted({c for t in texts for c in normalizer.normalize_str(t) if not c.isspace()})]
    trained = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trained.normalizer, trained.pre_tokenizer = normalizer, pre_tokenizers.BertPreTokenizer()
    trained.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                 special_tokens=SPECIAL_TOKENS + pieces))
    tok = Tokenizer(models.WordPiece(trained.get_vocab(with_added_tokens=False), unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A tokenizer saved with `save_pretrained(path)`; reads only the local folder."""
    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
