"""Tiny Hugging Face checkpoints written by the tests themselves.

Each is a real HF directory as `save_pretrained` writes it: a small random
PyTorch model (BERT or XLM-R architecture) and a tokenizer of the matching kind
(WordPiece for BERT, SentencePiece-style unigram for XLM-R) trained on the
multilingual fixture sentences, so the golden tests run real text in many
scripts through both stacks without any download.
"""
import pathlib

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from tests.conftest import read_multilingual

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)


def _corpus() -> list[str]:
  # With the e5 prefixes, as a retrieval model's tokenizer always sees them.
  return [p + t for _, t in read_multilingual() for p in ("", "query: ", "passage: ")]


def _wordpiece() -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=False)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=600,
                                                               special_tokens=specials))
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  tok.decoder = decoders.WordPiece()
  return tok


def _unigram() -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                         normalizers.Replace(tokenizers.Regex(" {2,}"), " ")])
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
  tok.train_from_iterator(_corpus(), trainers.UnigramTrainer(
      vocab_size=500, special_tokens=specials, unk_token="<unk>"))
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
      special_tokens=[("<s>", 0), ("</s>", 2)])
  tok.decoder = decoders.Metaspace()
  return tok


def write_bert(directory: pathlib.Path, seed: int = 0, **overrides) -> pathlib.Path:
  """A random mBERT-like model (WordPiece, positions from 0) in `directory`."""
  import torch
  import transformers
  tok = _wordpiece()
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
      sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
  cfg = transformers.BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=64,
                                **{**SMALL, **overrides})
  torch.manual_seed(seed)
  model = transformers.BertModel(cfg)
  _randomize(model, seed)
  model.save_pretrained(directory)
  fast.save_pretrained(directory)
  return pathlib.Path(directory)


def write_xlmr(directory: pathlib.Path, seed: int = 0, **overrides) -> pathlib.Path:
  """A random XLM-R-like model (unigram, positions offset past padding)."""
  import torch
  import transformers
  tok = _unigram()
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
      pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
      model_max_length=64)
  cfg = transformers.XLMRobertaConfig(
      vocab_size=tok.get_vocab_size(), max_position_embeddings=66, pad_token_id=1,
      type_vocab_size=1, **{**SMALL, **overrides})
  torch.manual_seed(seed)
  model = transformers.XLMRobertaModel(cfg)
  _randomize(model, seed)
  model.save_pretrained(directory)
  fast.save_pretrained(directory)
  return pathlib.Path(directory)


def _randomize(model, seed: int) -> None:
  """Non-trivial values everywhere (LayerNorm scales and biases too, not 1/0)."""
  import torch
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "LayerNorm.weight" in name:
        p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(0.05 * torch.randn(p.shape, generator=gen))
