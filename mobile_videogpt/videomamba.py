"""VideoMamba-M video encoder with bidirectional ("bimamba v2") Mamba blocks, in plain PyTorch.

Dimensions:
    T: frames in the clip (8), P: patches per frame (196 = 14x14), L: tokens (1 + T*P = 1569),
    M: d_model (576), Di: d_inner (1152), N: d_state (16), R: dt_rank (36), K: conv width (4).

Module attribute paths equal the checkpoint keys under ``model.vision_tower.vision_encoder.`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``temporal_pos_embedding``, ``layers.{i}.norm``, ``layers.{i}.mixer.*`` including the
backward-direction ``*_b`` tensors, ``norm``, ``clip_decoder.0.*``), so the strict loader needs no renaming.

What the release runs (VideoMamba's bundled mamba_ssm 1.0.1, fast path, CUDA/Triton kernels) and how this differs:
    * the fused add + RMSNorm Triton kernel is written out: the residual stream is summed and kept in fp32,
      the norm is computed in fp32 and cast back to the working dtype (identical math);
    * ``causal_conv1d`` is ``F.conv1d`` with left padding K-1, cut to L, then SiLU (identical math);
    * the selective scan is ``selective_scan.SCAN_IMPLS[config.scan_impl]``; "ref" is the sequential fp32 loop the
      golden vectors were made with, faster formulations are tested against it;
    * the backward direction runs on the sequence reversed along L with its own conv/x_proj/dt_proj/A/D weights
      and is flipped back and summed with the forward output before the shared out_proj. The release's non-fast
      path (``use_fast_path=False``) is forward-only; it is never used here.
    * ``clip_decoder`` (a pretraining head) is built so its checkpoint tensors are consumed, and is never called.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobile_videogpt.config import VideoMambaConfig
from mobile_videogpt.selective_scan import get_scan_impl


class VideoMambaRMSNorm(nn.Module):
    """RMSNorm with weight and no bias, computed in fp32 (the Triton kernel's internal precision)."""

    def __init__(self, dim: int, eps: float) -> None:
        """Builds the norm.

        Args:
            dim: Width M.
            eps: Epsilon added to the mean square.
        """
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Normalises the last dimension.

        Args:
            x: Input [..., M] (the fp32 residual stream).
            out_dtype: Dtype of the result (the working dtype); defaults to x's.

        Returns:
            Normalised tensor [..., M].
        """
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(out_dtype or x.dtype)


class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer (bimamba v2): shared in_proj/out_proj, separate forward/backward SSM weights."""

    def __init__(self, cfg: VideoMambaConfig) -> None:
        """Builds the mixer.

        Args:
            cfg: VideoMamba configuration.
        """
        super().__init__()
        m, di, n, r, k = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = di, n, r, k
        self.scan_impl = cfg.scan_impl
        self._scan = get_scan_impl(cfg.scan_impl)
        self.in_proj = nn.Linear(m, 2 * di, bias=False)
        self.out_proj = nn.Linear(di, m, bias=False)
        # Forward direction.
        self.conv1d = nn.Conv1d(di, di, k, groups=di, padding=k - 1, bias=True)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.zeros(di, n))
        self.D = nn.Parameter(torch.ones(di))
        # Backward direction (the ``*_b`` checkpoint tensors).
        self.conv1d_b = nn.Conv1d(di, di, k, groups=di, padding=k - 1, bias=True)
        self.x_proj_b = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj_b = nn.Linear(r, di, bias=True)
        self.A_b_log = nn.Parameter(torch.zeros(di, n))
        self.D_b = nn.Parameter(torch.ones(di))

    def _direction(
        self,
        xz: torch.Tensor,
        conv: nn.Conv1d,
        x_proj: nn.Linear,
        dt_proj: nn.Linear,
        a_log: torch.Tensor,
        d_skip: torch.Tensor,
    ) -> torch.Tensor:
        """One scan direction (``mamba_inner_fn_no_out_proj``).

        Args:
            xz: Projected input [B, 2*Di, L] in scan order.
            conv: Depthwise causal conv of this direction.
            x_proj: Projection to (dt_raw, B, C) of this direction.
            dt_proj: Step-size projection of this direction.
            a_log: log(-A) [Di, N] of this direction.
            d_skip: Skip weights D [Di].

        Returns:
            Gated scan output [B, Di, L].
        """
        length = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)  # [B, Di, L] each
        x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=self.d_conv - 1, groups=self.d_inner)[..., :length])
        x_dbl = F.linear(x.transpose(1, 2), x_proj.weight)  # [B, L, R + 2N]
        dt_raw, b_in, c_out = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt_raw, dt_proj.weight).transpose(1, 2)  # [B, Di, L]; bias goes in the scan
        a = -torch.exp(a_log.float())  # [Di, N], kept fp32 as the release does
        return self._scan(
            x,
            delta,
            a,
            b_in.transpose(1, 2),  # [B, N, L]
            c_out.transpose(1, 2),  # [B, N, L]
            d_skip.float(),
            z=z,
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Mixes a sequence in both directions.

        Args:
            hidden: Normalised input [B, L, M].

        Returns:
            Mixer output [B, L, M].
        """
        xz = F.linear(hidden, self.in_proj.weight).transpose(1, 2)  # [B, 2*Di, L]
        y_fwd = self._direction(xz, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
        y_bwd = self._direction(xz.flip(-1), self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b)
        y = y_fwd + y_bwd.flip(-1)  # plain sum, no averaging (bimamba v2)
        return F.linear(y.transpose(1, 2), self.out_proj.weight)  # [B, L, M]


class VideoMambaBlock(nn.Module):
    """One residual block: (add) -> RMSNorm -> bidirectional mixer; the add is done by the caller in fp32."""

    def __init__(self, cfg: VideoMambaConfig) -> None:
        """Builds the block.

        Args:
            cfg: VideoMamba configuration.
        """
        super().__init__()
        self.norm = VideoMambaRMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.mixer = BiMambaMixer(cfg)


class PatchEmbed3d(nn.Module):
    """Tubelet-1 patch embedding (``patch_embed.proj``: Conv3d 3 -> M, kernel (1, 16, 16))."""

    def __init__(self, cfg: VideoMambaConfig) -> None:
        """Builds the conv.

        Args:
            cfg: VideoMamba configuration.
        """
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv3d(3, cfg.embed_dim, kernel_size=(1, p, p), stride=(1, p, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds [B, 3, T, S, S] -> [B, M, T, 14, 14]."""
        return self.proj(x)


class ClipDecoderHead(nn.Module):
    """Pretraining distillation head (``clip_decoder.0``): loaded for strictness, unused at inference."""

    def __init__(self, cfg: VideoMambaConfig) -> None:
        """Builds the head.

        Args:
            cfg: VideoMamba configuration.
        """
        super().__init__()
        self.head = nn.Linear(cfg.embed_dim, cfg.clip_decoder_dim)
        self.norm = nn.LayerNorm(cfg.clip_decoder_dim)


class VideoMamba(nn.Module):
    """VideoMamba-M backbone (``PretrainVideoMamba``), returning ``x_vis`` after the final norm."""

    def __init__(self, cfg: VideoMambaConfig) -> None:
        """Builds the backbone.

        Args:
            cfg: VideoMamba configuration.
        """
        super().__init__()
        self.cfg = cfg
        m = cfg.embed_dim
        self.patch_embed = PatchEmbed3d(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, m))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid**2 + 1, m))
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, cfg.num_frames, m))
        self.layers = nn.ModuleList([VideoMambaBlock(cfg) for _ in range(cfg.depth)])
        self.norm = VideoMambaRMSNorm(m, cfg.norm_eps)
        self.clip_decoder = nn.ModuleList([ClipDecoderHead(cfg)])

    def set_scan_impl(self, name: str) -> None:
        """Switches every mixer to another selective-scan implementation (by registry name).

        Args:
            name: A key of ``selective_scan.SCAN_IMPLS``.
        """
        scan = get_scan_impl(name)
        for layer in self.layers:
            layer.mixer.scan_impl = name
            layer.mixer._scan = scan

    def embed(self, clip: torch.Tensor) -> torch.Tensor:
        """Patch, CLS and position embeddings of one clip.

        Args:
            clip: Video-branch pixels [T, 3, S, S] of the selected frames, in slot order.

        Returns:
            Token sequence [1, L, M]: frame 0's CLS, then frame-major, row-major patches.
        """
        t = clip.shape[0]
        if t != self.cfg.num_frames:
            raise ValueError(f"VideoMamba takes exactly {self.cfg.num_frames} frames (temporal positions), got {t}")
        x = self.patch_embed(clip.permute(1, 0, 2, 3).unsqueeze(0))  # [1, M, T, 14, 14]
        _, m, t, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(t, h * w, m)  # [T, P, M]
        x = torch.cat([self.cls_token.expand(t, -1, -1), x], dim=1) + self.pos_embed  # [T, 1+P, M]
        cls = x[:1, :1]  # [1, 1, M]: frame 0's CLS only (release: x[:B, :1] with B = 1)
        x = x[:, 1:] + self.temporal_pos_embedding[0, :, None, :]  # [T, P, M]: temporal pos on patches only
        return torch.cat([cls, x.reshape(1, t * h * w, m)], dim=1)  # [1, 1 + T*P, M]

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Encodes one clip.

        Args:
            clip: Video-branch pixels [T, 3, S, S].

        Returns:
            ``x_vis`` [1, L, M] after the final RMSNorm (row 0 is the CLS token).
        """
        hidden = self.embed(clip)
        dtype = hidden.dtype
        residual: torch.Tensor | None = None
        for layer in self.layers:
            # Fused add + norm with residual_in_fp32: the stream is summed and kept in fp32.
            residual = hidden.float() if residual is None else residual + hidden.float()
            hidden = layer.mixer(layer.norm(residual, out_dtype=dtype))
        residual = hidden.float() if residual is None else residual + hidden.float()
        return self.norm(residual, out_dtype=dtype)


class VideoMambaTower(nn.Module):
    """The ``vision_tower`` wrapper (``VideoMamba_Stage2``): holds ``vision_encoder``."""

    def __init__(self, cfg: VideoMambaConfig) -> None:
        """Builds the tower.

        Args:
            cfg: VideoMamba configuration.
        """
        super().__init__()
        self.vision_encoder = VideoMamba(cfg)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Encodes a clip and drops the CLS token.

        Args:
            clip: Video-branch pixels [T, 3, S, S].

        Returns:
            Patch tokens per frame slot [T, P, M].
        """
        x_vis = self.vision_encoder(clip)  # [1, L, M]
        t = clip.shape[0]
        return x_vis[0, 1:].reshape(t, -1, x_vis.shape[-1])
