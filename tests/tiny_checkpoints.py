"""Tiny Hugging Face checkpoints written by the tests themselves.

Each is a real HF directory as `save_pretrained` writes it: a small random
PyTorch model (BERT or XLM-R architecture) and a tokenizer of the matching kind
(WordPiece for BERT, SentencePiece-style unigram for XLM-R) built from the
multilingual fixture sentences (deterministically, the same in every run), so the
golden tests run real text in many scripts through both stacks without any download.
"""
import collections
import math
import pathlib

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from tests.conftest import read_multilingual

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)


def _corpus() -> list[str]:
  # With the e5 prefixes, as a retrieval model's tokenizer always sees them.
  return [p + t for _, t in read_multilingual() for p in ("", "query: ", "passage: ")]


def _words(tok: tokenizers.Tokenizer) -> list[str]:
  """The corpus cut into words by `tok`'s own normalizer and pre-tokenizer."""
  return [w for text in _corpus()
          for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]


def _ranked(counts: collections.Counter, n: int) -> list[str]:
  """The `n` most frequent, ties broken by the string itself. (The trainers of
  `tokenizers` break ties in hash order, which changes from process to process:
  their vocabularies, and so every tokenised fixture, differed from run to run.)"""
  return sorted(counts, key=lambda piece: (-counts[piece], piece))[:max(n, 0)]


def _wordpiece() -> tokenizers.Tokenizer:
  """WordPiece over the corpus, built deterministically: every character (alone, and as
  a `##` continuation), then the most frequent word-initial and inner pieces of 2 to 6
  characters, 600 entries in all."""
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=False)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  words = _words(tok)
  alphabet = sorted({c for w in words for c in w})
  chars = alphabet + ["##" + c for c in alphabet]
  pieces = collections.Counter(w[:j] for w in words for j in range(2, min(len(w), 6) + 1))
  pieces.update("##" + w[i:j] for w in words for i in range(1, len(w))
                for j in range(i + 2, min(len(w), i + 6) + 1))
  vocab = specials + chars + _ranked(pieces, 600 - len(specials) - len(chars))
  tok.model = models.WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]")
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  tok.decoder = decoders.WordPiece()
  return tok


def _unigram() -> tokenizers.Tokenizer:
  """A SentencePiece-style unigram model over the corpus, built deterministically:
  every character, then the most frequent pieces of 2 to 6 characters (500 entries
  in all), each scored by the log of its share of the counts."""
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                         normalizers.Replace(tokenizers.Regex(" {2,}"), " ")])
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
  words = _words(tok)
  counts = collections.Counter(c for w in words for c in w)
  chars = sorted(counts)
  pieces = collections.Counter(w[i:j] for w in words for i in range(len(w))
                               for j in range(i + 2, min(len(w), i + 6) + 1))
  counts.update(pieces)
  kept = chars + _ranked(pieces, 500 - len(specials) - len(chars))
  total = sum(counts[p] for p in kept)
  tok.model = models.Unigram([(s, 0.0) for s in specials]
                             + [(p, math.log(counts[p] / total)) for p in kept],
                             unk_id=specials.index("<unk>"), byte_fallback=False)
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
