"""What of Florence-2 is converted to OpenVINO: four graphs traced from the loaded torch modules, their weights
shared with nothing else once converted.

- `vision`: pixels -> the projected image features the text encoder takes in place of its image tokens.
- `encoder`: the prompt's embeddings (image features merged in) and mask -> the text encoder's states.
- `cross`: those states -> every decoder layer's cross-attention keys and values, once a keyframe.
- `decoder`: one token a row, its position, the encoder's mask and the keys and values so far -> the next
  token's logits and this token's self-attention keys and values.

The keys and values stay outside the graphs (transformers' own cache holds them), so `generate` drives decoding as
it does for torch: greedy or beams, scores for per-box confidences, every task. The decoder step is written from
the layers' own modules (BART's post-norm layer: attention, residual, norm) rather than traced through
transformers' cache code, whose shapes the tracer would fix to the example's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NAMES = ("vision", "encoder", "cross", "decoder")


def layout(model) -> tuple[int, int, int, int]:
    """(decoder layers, attention heads, head size, model width) of a Florence-2's text side."""
    decoder = model.model.language_model.decoder
    attention = decoder.layers[0].self_attn
    return len(decoder.layers), attention.num_heads, attention.head_dim, attention.embed_dim


def _heads(x: torch.Tensor, heads: int, size: int) -> torch.Tensor:
    """(rows, tokens, width) -> (rows, heads, tokens, head size), as the cache keeps them."""
    return x.view(x.shape[0], x.shape[1], heads, size).transpose(1, 2)


class Vision(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values).pooler_output


class Encoder(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.encoder = model.model.language_model.encoder

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state


class Cross(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.layers = model.model.language_model.decoder.layers
        _, self.heads, self.size, _ = layout(model)

    def forward(self, encoder_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = []
        for layer in self.layers:
            attention = layer.encoder_attn
            out += [_heads(attention.k_proj(encoder_states), self.heads, self.size),
                    _heads(attention.v_proj(encoder_states), self.heads, self.size)]
        return tuple(out)


class DecoderStep(nn.Module):
    """One token a row through the decoder and the output layer, as transformers' BART decoder computes it with a
    cache: inputs (ids, positions, encoder mask, past keys/values of every layer, cross keys/values of every
    layer), outputs (logits, this token's keys/values of every layer)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.decoder = model.model.language_model.decoder
        self.head = model.lm_head
        self.count, self.heads, self.size, self.width = layout(model)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, encoder_mask: torch.Tensor,
                *keys_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        past, cross = keys_values[: 2 * self.count], keys_values[2 * self.count :]
        decoder = self.decoder
        table = decoder.embed_positions
        h = decoder.embed_tokens(ids) + F.embedding(positions + table.offset, table.weight)
        h = decoder.layernorm_embedding(h)
        rows, tokens = ids.shape
        masked = (1.0 - encoder_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        new = []
        for i, layer in enumerate(decoder.layers):
            mine = layer.self_attn
            key, value = self._split(mine.k_proj(h)), self._split(mine.v_proj(h))
            new += [key, value]
            seen = F.scaled_dot_product_attention(self._split(mine.q_proj(h)), torch.cat([past[2 * i], key], 2),
                                                  torch.cat([past[2 * i + 1], value], 2), scale=mine.scaling)
            h = layer.self_attn_layer_norm(h + mine.out_proj(self._join(seen, rows, tokens)))
            theirs = layer.encoder_attn
            seen = F.scaled_dot_product_attention(self._split(theirs.q_proj(h)), cross[2 * i], cross[2 * i + 1],
                                                  attn_mask=masked, scale=theirs.scaling)
            h = layer.encoder_attn_layer_norm(h + theirs.out_proj(self._join(seen, rows, tokens)))
            h = layer.final_layer_norm(h + layer.fc2(layer.activation_fn(layer.fc1(h))))
        return (self.head(h), *new)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return _heads(x, self.heads, self.size)

    def _join(self, x: torch.Tensor, rows: int, tokens: int) -> torch.Tensor:
        return x.transpose(1, 2).reshape(rows, tokens, self.width)


def convert(ov, model, size: tuple[int, int]) -> dict:
    """Each graph by name, converted by OpenVINO's converter from `model` in float32, with rows, prompt length and
    cache length left free (the example's values are only what the tracer runs once)."""
    count, heads, head, width = layout(model)
    width_, height = size
    free = ov.PartialShape
    rows, prompt, past = 2, 12, 3
    mask = torch.ones(rows, prompt, dtype=torch.long)
    mask[1, prompt // 2 :] = 0  # padding in the example: the mask's path is traced, not skipped
    states = torch.zeros(rows, prompt, width)
    per_layer = [free([-1, heads, -1, head])] * (4 * count)
    examples = {
        "vision": (Vision(model), (torch.zeros(1, 3, height, width_),), [free([-1, 3, height, width_])]),
        "encoder": (Encoder(model), (states, mask), [free([-1, -1, width]), free([-1, -1])]),
        "cross": (Cross(model), (states,), [free([-1, -1, width])]),
        "decoder": (DecoderStep(model),
                    (torch.ones(rows, 1, dtype=torch.long), torch.full((rows, 1), past), mask,
                     *[torch.zeros(rows, heads, past, head)] * (2 * count),
                     *[torch.zeros(rows, heads, prompt, head)] * (2 * count)),
                    [free([-1, 1]), free([-1, 1]), free([-1, -1]), *per_layer]),
    }
    return {name: ov.convert_model(module.eval(), example_input=example, input=shapes)
            for name, (module, example, shapes) in examples.items()}
