"""CLIP ViT-B/16 image encoder for the context frames (release: ``clip_encoder.py``, ``CLIPVisionTower``).

Dimensions: F frames, S = 224, P = 196 patches, E = 768.

The release runs ``CLIPVisionModel`` and takes ``hidden_states[-2]`` (the output of the second-to-last encoder layer,
no post_layernorm) and drops the CLS token. transformers 5 removed the ``vision_model.`` level from
``CLIPVisionModel``; the wrapper here restores it as an attribute so module paths equal the CLIP checkpoint keys
(``vision_model.embeddings...``).

Deviation: only the layers up to the selected one are run (``hidden_states[-2]`` does not depend on the last layer
or post_layernorm); their weights are still loaded strictly. The output equals the release's.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel


class CLIPImageEncoder(nn.Module):
    """CLIP vision tower returning the selected layer's patch tokens."""

    def __init__(self, config: CLIPVisionConfig, select_layer: int = -2) -> None:
        """Builds the tower.

        Args:
            config: CLIP vision config.
            select_layer: Index into HF's ``hidden_states`` tuple ([embeddings, layer 1, ..., layer n]); -2 in the release.
        """
        super().__init__()
        self.vision_model = CLIPVisionModel(config)
        n_layers = config.num_hidden_layers
        index = select_layer if select_layer >= 0 else n_layers + 1 + select_layer
        if not 0 <= index <= n_layers:
            raise ValueError(f"select_layer {select_layer} is outside hidden_states of a {n_layers}-layer CLIP")
        self.num_layers_run = index  # hidden_states[index] is the output of layer `index` (0 = embeddings)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encodes CLIP-branch pixels.

        Args:
            pixels: CLIP-normalised pixels [F, 3, S, S].

        Returns:
            Patch features [F, P, E] of the selected layer (CLS dropped).
        """
        vm = self.vision_model
        hidden = vm.pre_layrnorm(vm.embeddings(pixels.to(vm.embeddings.patch_embedding.weight.dtype)))  # [F, 1+P, E]
        for layer in vm.encoder.layers[: self.num_layers_run]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]  # drop CLS
