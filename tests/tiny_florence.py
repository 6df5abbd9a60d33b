"""Build a tiny, randomly initialised Florence-2 offline that always answers the same text.

Random weights emit noise; tests need to know what the model says. The decoder's residual
blocks are zeroed and its token embeddings too, so each step's output depends only on the
decoder position; position i is wired to the i-th token of a fixed answer. The encoder,
vision tower, processor and parsing are the real ones, saved with ``save_pretrained`` and
loaded back through the product's own loader.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BartConfig,
    BartTokenizerFast,
    CLIPImageProcessorPil,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    Florence2VisionConfig,
)

IMAGE_SIDE = 64
D_MODEL = 64
TASK_TOKENS = [
    "<OD>", "<OCR>", "<OCR_WITH_REGION>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>",
    "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<CAPTION_TO_PHRASE_GROUNDING>",
    "<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>",
    "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>",
]
EXTRA_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>", "<poly>", "</poly>", "<sep>", "<cap>", "</cap>",
                "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>",
                "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>",
                "<proposal>", "</proposal>", "<and>"]
LOC_TOKENS = [f"<loc_{i}>" for i in range(1000)]
# Words the tiny tokenizer knows as single or few tokens; anything else is spelled from bytes.
CORPUS = [
    "What is the text in the image, with regions?", "Locate the objects with category name in the image.",
    "What does the image describe?", "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.", "Locate the objects in the image, with their descriptions.",
    "Locate the region proposals in the image.", "Locate the phrases in the caption:", "in the image with mask",
    "What is the polygon mask of region", "What is the region", "What does the region describe?",
    "What text is in the region", "What is the text in the image?",
    "car person truck dog bus sign PLATE 42 STREAMER 2026 a red car on a road",
]

POST_PROCESSOR_CONFIG = {
    "ocr": {"pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
            "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {}, "description_with_bboxes": {}, "description_with_polygons": {}, "polygons": {},
    "bboxes": {}, "description_with_bboxes_or_polygons": {},
}


def _tokenizer() -> BartTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = BartTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        sep_token="</s>", cls_token="<s>", mask_token="<mask>", extra_special_tokens={"image_token": "<image>"},
    )
    fast.add_tokens(TASK_TOKENS + EXTRA_TOKENS + LOC_TOKENS)
    return fast


def make_processor(image_side: int = IMAGE_SIDE) -> Florence2Processor:
    """A Florence-2 processor made locally: the tiny tokenizer, CLIP's PIL image processor at `image_side`."""
    image_processor = CLIPImageProcessorPil(
        size={"height": image_side, "width": image_side}, do_center_crop=False, do_resize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    image_processor.image_seq_length = (image_side // 32) ** 2 + 1  # one extra pooled token
    return Florence2Processor(image_processor=image_processor, tokenizer=_tokenizer(),
                              post_processor_config=POST_PROCESSOR_CONFIG)


def build_tiny_florence(folder: Path, answer: str | None, weights: dict[str, float] | None = None) -> Path:
    """Save a tiny Florence-2 (model + processor) to ``folder`` whose every answer is ``answer``.

    ``weights`` scales the logit of chosen answer tokens (default 10): a small weight makes the model less
    sure of that token while still choosing it, which gives boxes known, different confidences. With no
    ``answer`` the weights stay random (and trainable as any model): a start for fine-tuning.
    """
    torch.manual_seed(0)
    processor = make_processor()
    tokenizer = processor.tokenizer
    answer_ids = tokenizer(answer or "", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    vocab = len(tokenizer)
    text_config = BartConfig(
        vocab_size=vocab, d_model=D_MODEL, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id, forced_bos_token_id=None, forced_eos_token_id=None,
        scale_embedding=False, tie_word_embeddings=False,
    )
    vision_config = Florence2VisionConfig(
        depths=[1, 1, 1, 1], embed_dim=[8, 16, 32, 32], num_heads=[1, 2, 2, 2], num_groups=[1, 2, 2, 2],
        window_size=2, projection_dim=D_MODEL, drop_path_rate=0.0,
    )
    config = Florence2Config(text_config=text_config, vision_config=vision_config,
                             image_token_id=tokenizer.image_token_id, tie_word_embeddings=False)
    model = Florence2ForConditionalGeneration(config).eval()
    token_weights = {
        token: w for text, w in (weights or {}).items() for token in tokenizer(text, add_special_tokens=False)["input_ids"]
    }
    if answer is not None:
        _wire_fixed_answer(model, answer_ids, token_weights)
    model.generation_config.update(decoder_start_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                   forced_bos_token_id=None, forced_eos_token_id=None, num_beams=1,
                                   max_new_tokens=len(answer_ids) + 4)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@torch.no_grad()
def _wire_fixed_answer(model: Florence2ForConditionalGeneration, answer_ids: list[int], weights: dict[int, float]) -> None:
    lm = model.model.language_model
    lm.shared.weight.zero_()
    decoder = lm.decoder
    for layer in decoder.layers:
        for proj in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
            proj.weight.zero_()
            proj.bias.zero_()
    distinct = sorted(set(answer_ids))
    if len(distinct) > D_MODEL:
        raise ValueError(f"answer has {len(distinct)} distinct tokens; the tiny model holds {D_MODEL}")
    slot = {tok: i for i, tok in enumerate(distinct)}
    positions = decoder.embed_positions.weight  # learned, offset by 2 in BART
    positions.zero_()
    offset = getattr(decoder.embed_positions, "offset", 2)
    for step, tok in enumerate(answer_ids):
        positions[step + offset, slot[tok]] = 10.0
    head = model.lm_head.weight
    head.zero_()
    for tok, i in slot.items():
        head[tok, i] = weights.get(tok, 10.0)


DEMO_ANSWER = "car<loc_50><loc_550><loc_300><loc_830>"

if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/tiny-florence")
    build_tiny_florence(target, sys.argv[2] if len(sys.argv) > 2 else DEMO_ANSWER)
    print(f"tiny Florence-2 (random weights, fixed answer) saved to {target}")
